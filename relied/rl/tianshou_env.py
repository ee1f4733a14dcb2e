"""The routing env as a turn-based PettingZoo ``AECEnv`` of decisions, for Tianshou's
multi-agent path (``tianshou.env.PettingZooEnv``).

PettingZoo's ``parallel_to_aec`` would give every agent a turn at every simulator step
(almost all of them no-ops) and put the whole step's rewards on the last agent's turn. Here
only *deciding* agents take turns: the agents at a node at simulator step ``t`` act one after
the other (``vehicle_<i>``, with the spaces of :class:`relied.env.parallel.RoutingParallelEnv`);
after the last of them the core advances (with no-ops) until some agent decides again or the
episode ends. ``rewards`` after a turn hold what every agent earned in the simulator steps that
turn triggered (zero otherwise), so the sum of an agent's column from its decision to its next
one is the decision's reward (:class:`relied.rl.tianshou_engine.DecisionAdvantages` rebuilds
it). The episode ends for all agents at once. ``infos`` (the same keys on every turn, as
Tianshou's buffer needs) carry the decision node of the agent that just acted, the scenario
seed, the step count, the travel-time metrics so far and which agents arrived.

Episode ``e`` of an env runs the scenario of training iteration ``start + e``
(:class:`TripSchedule`: fresh trips by default, else the fixed pool), as the fast engine
draws them; an episode ends one iteration, so a resumed run starts its envs at its iteration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from pettingzoo import AECEnv

from relied.env.cities import load_city
from relied.env.core import ARRIVED, RoutingCore
from relied.env.parallel import RoutingParallelEnv
from relied.env.scenario import Scenario
from relied.rl.config import TrainConfig
from relied.rl.envs import vector_env


@dataclass(frozen=True)
class TripSchedule:
    """The scenario of training iteration ``it``: fresh trips (``cfg.training_seed(it)``) or,
    with ``train_seeds = N``, fixed scenario ``seed + it mod N`` (the fast engine's rule)."""

    cfg: TrainConfig

    def __call__(self, iteration: int) -> Scenario:
        return self.cfg.iteration_scenario(iteration)


class RoutingAECEnv(AECEnv):
    metadata = {"name": "relied_routing_decisions_v0", "render_modes": [],
                "is_parallelizable": False}

    # the per-agent spaces of the parallel face (they read ``self.core``)
    observation_space = RoutingParallelEnv.observation_space
    action_space = RoutingParallelEnv.action_space

    def __init__(self, schedule: Callable[[int], Scenario], start: int = 0):
        super().__init__()
        self.schedule, self.episode = schedule, start
        scenario = schedule(start)
        self.net = load_city(scenario.city)
        self.core = RoutingCore(self.net, scenario)
        self.possible_agents = [f"vehicle_{i}" for i in range(self.core.n)]
        self.agents: list[str] = []
        self.render_mode = None

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        i = int(agent.rsplit("_", 1)[1])
        return {"observation": self._obs[i], "action_mask": self._mask[i].astype(np.int8)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        scenario = self.schedule(self.episode)
        if scenario != self.core.scenario:
            self.core = RoutingCore(self.net, scenario)
        self.core.reset()
        self.agents = list(self.possible_agents)
        zero = dict.fromkeys(self.agents, 0.0)
        self.rewards, self._cumulative_rewards = dict(zero), dict(zero)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self._actions = np.full(self.core.n, self.core.noop, dtype=np.int64)
        self.agent_selection = self.possible_agents[0]
        self._advance(np.zeros(self.core.n), acted=-1)

    def _advance(self, earned: np.ndarray, acted: int) -> None:
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
        self._state = {"seed": core.scenario.seed, "t": core.t,
                       "mean_travel_time": m["mean_travel_time"],
                       "p95_travel_time": m["p95_travel_time"],
                       "arrival_rate": m["arrival_rate"], "arrived": core.status == ARRIVED}
        self._set_infos(acted)

    def _set_infos(self, acted: int) -> None:
        self.infos = dict.fromkeys(self.agents, {"node": acted, **self._state})

    def step(self, action) -> None:
        core = self.core
        i = self._queue.pop(0)
        self._actions[i] = int(action)
        acted = int(core.decision_node()[i])
        if self._queue:  # more agents decide at this simulator step
            self.rewards = dict.fromkeys(self.possible_agents, 0.0)
            self.agent_selection = self.possible_agents[self._queue[0]]
            self._set_infos(acted)
            return
        earned = core.step(self._actions)[1]
        self._actions[:] = core.noop
        self._advance(earned, acted)


def make_aec_vector_env(schedule: Callable[[int], Scenario], n_envs: int, vector: str,
                        start: int = 0):
    """``n_envs`` copies of the decision AEC env (first episode: iteration ``start``), each
    wrapped in Tianshou's ``PettingZooEnv``, behind one of Tianshou's vector envs."""
    return vector_env([functools.partial(_wrapped, schedule, start, vector == "ray")
                       for _ in range(n_envs)], vector)


def _wrapped(schedule: Callable[[int], Scenario], start: int, as_gym: bool):
    from tianshou.env import PettingZooEnv

    env = PettingZooEnv(RoutingAECEnv(schedule, start))
    return _GymFace(env) if as_gym else env


class _GymFace(gym.Env):
    """A ``PettingZooEnv`` typed as a ``gymnasium.Env`` (same spaces, ``reset``, ``step``):
    Tianshou's Ray worker wraps each env in a ``gymnasium.Wrapper``, which refuses anything
    else."""

    def __init__(self, env):
        self.env = env
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)

    def step(self, action):
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()
