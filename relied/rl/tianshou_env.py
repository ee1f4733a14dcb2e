"""The routing env as a turn-based PettingZoo ``AECEnv`` of decisions, for Tianshou's
multi-agent path (``tianshou.env.PettingZooEnv``).

PettingZoo's ``parallel_to_aec`` would give every agent a turn at every simulator step
(almost all of them no-ops) and put the whole step's rewards on the last agent's turn. Here
only *deciding* agents take turns: the agents at a node at simulator step ``t`` act one after
the other (``vehicle_<i>``, ``Discrete(K+1)``, ``{"observation", "action_mask"}`` as in
:class:`relied.env.parallel.RoutingParallelEnv`); after the last of them the core advances
(with no-ops) until some agent decides again or the episode ends. ``rewards`` after a turn
hold what every agent earned in the simulator steps that turn triggered (zero otherwise), so
the sum of an agent's column from its decision to its next one is the decision's reward
(:class:`relied.rl.tianshou_engine.DecisionAdvantages` rebuilds it). The episode ends for all
agents at once. ``infos`` (the same keys on every turn, as Tianshou's buffer needs) carry the
decision node of the agent that just acted, the step count, the travel-time metrics so far
and which agents arrived.

Each env cycles over its training scenarios: episode ``e`` runs scenario ``e mod N``.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv

from relied.env.cities import load_city
from relied.env.core import ARRIVED, OBS_HIGH, OBS_LOW, RoutingCore
from relied.env.scenario import Scenario
from relied.rl.envs import VECTORS, check_backend, start_ray


class RoutingAECEnv(AECEnv):
    metadata = {"name": "relied_routing_decisions_v0", "render_modes": [],
                "is_parallelizable": False}

    def __init__(self, scenarios: list[Scenario]):
        super().__init__()
        net = load_city(scenarios[0].city)
        self.cores = [RoutingCore(net, s) for s in scenarios]
        self.core = self.cores[0]
        self.episode = 0
        self.possible_agents = [f"vehicle_{i}" for i in range(self.core.n)]
        self.agents: list[str] = []
        self.render_mode = None

    @functools.cache  # noqa: B019 - one space object per agent, as PettingZoo expects
    def observation_space(self, agent: str) -> spaces.Dict:
        return spaces.Dict({
            "observation": spaces.Box(OBS_LOW, OBS_HIGH, (self.core.obs_dim,), np.float32),
            "action_mask": spaces.Box(0, 1, (self.core.k + 1,), np.int8),
        })

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.core.k + 1)

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        i = int(agent.rsplit("_", 1)[1])
        return {"observation": self._obs[i], "action_mask": self._mask[i].astype(np.int8)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.core = self.cores[self.episode % len(self.cores)]
        self.core.reset()
        self.agents = list(self.possible_agents)
        zero = dict.fromkeys(self.agents, 0.0)
        self.rewards, self._cumulative_rewards = dict(zero), dict(zero)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self._actions = np.full(self.core.n, self.core.noop, dtype=np.int64)
        self._acted_node = -1
        self.agent_selection = self.possible_agents[0]
        self._advance(np.zeros(self.core.n))

    def _advance(self, earned: np.ndarray) -> None:
        """Step the core until an agent decides or the episode ends; queue the deciders."""
        core = self.core
        while True:
            self._obs, self._mask = core.observe(), core.action_mask()
            self._queue = list(np.flatnonzero(self._mask[:, : core.k].any(axis=1)))
            if self._queue or core.done:
                break
            earned = earned + core.step(np.full(core.n, core.noop))[1]
        self.rewards = dict(zip(self.possible_agents, earned.tolist(), strict=True))
        if core.done:
            self.terminations = dict.fromkeys(self.agents, True)
            self.episode += 1
        else:
            self.agent_selection = self.possible_agents[self._queue[0]]
        m = core.metrics()
        info = {"node": self._acted_node, "t": core.t, "mean_travel_time":
                m["mean_travel_time"], "p95_travel_time": m["p95_travel_time"],
                "arrival_rate": m["arrival_rate"], "arrived": core.status == ARRIVED}
        self.infos = dict.fromkeys(self.agents, info)

    def step(self, action) -> None:
        core = self.core
        i = self._queue.pop(0)
        self._actions[i] = int(action)
        self._acted_node = int(core.decision_node()[i])
        if self._queue:  # more agents decide at this simulator step
            self.rewards = dict.fromkeys(self.possible_agents, 0.0)
            self.agent_selection = self.possible_agents[self._queue[0]]
            return
        earned = core.step(self._actions)[1]
        self._actions[:] = core.noop
        self._advance(earned)


def make_aec_vector_env(scenarios: list[Scenario], n_envs: int, vector: str):
    """``n_envs`` copies of the decision AEC env, each wrapped in Tianshou's ``PettingZooEnv``,
    behind one of Tianshou's vector envs (``dummy``, ``subproc``, ``ray``)."""
    from tianshou.env import DummyVectorEnv, RayVectorEnv, SubprocVectorEnv

    check_backend(vector)
    if vector == "ray":
        start_ray(n_envs)
    fns = [functools.partial(_wrapped, scenarios) for _ in range(n_envs)]
    backend = dict(zip(VECTORS, (DummyVectorEnv, SubprocVectorEnv, RayVectorEnv), strict=True))
    return backend[vector](fns)


def _wrapped(scenarios: list[Scenario]):
    from tianshou.env import PettingZooEnv

    return PettingZooEnv(RoutingAECEnv(scenarios))
