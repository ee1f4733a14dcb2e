"""PettingZoo ``ParallelEnv`` face of :class:`RoutingCore` (same dynamics, per-agent dicts).

Each vehicle ``vehicle_<i>`` observes ``{"observation": Box(obs_dim), "action_mask": (K+1,)}``
and acts with ``Discrete(K+1)`` (slot ``K`` is the no-op of agents not at a decision point).
Arrived agents leave ``agents``; at the horizon every remaining agent is truncated.
``reset(seed=s)`` re-samples origins and destinations from ``s`` unless the scenario fixes them.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from relied.env.cities import load_city
from relied.env.core import OBS_HIGH, OBS_LOW, RoutingCore
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario


class RoutingParallelEnv(ParallelEnv):
    metadata = {"name": "relied_routing_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, scenario: Scenario | None = None, net: CityNetwork | None = None):
        self.base_scenario = scenario or Scenario()
        self.net = net if net is not None else load_city(self.base_scenario.city)
        self.core = RoutingCore(self.net, self.base_scenario)
        self.possible_agents = [f"vehicle_{i}" for i in range(self.core.n)]
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
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

    def _obs(self, obs: np.ndarray, agents: list[str]) -> dict[str, dict[str, np.ndarray]]:
        mask = self.core.action_mask().astype(np.int8)
        return {a: {"observation": obs[self._index[a]], "action_mask": mask[self._index[a]]}
                for a in agents}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None and seed != self.core.scenario.seed:
            self.core = RoutingCore(self.net, self.base_scenario.model_copy(update={"seed": seed}))
        obs = self.core.reset()
        self.agents = list(self.possible_agents)
        return self._obs(obs, self.agents), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]):
        joint = np.full(self.core.n, self.core.noop, dtype=np.int64)
        for agent, action in actions.items():
            joint[self._index[agent]] = int(action)
        obs, reward, term, trunc = self.core.step(joint)
        live = self.agents
        idx = [self._index[a] for a in live]
        rewards = dict(zip(live, reward[idx].tolist(), strict=True))
        terminations = dict(zip(live, term[idx].tolist(), strict=True))
        truncations = dict(zip(live, trunc[idx].tolist(), strict=True))
        infos = {a: {} for a in live}
        observations = self._obs(obs, live)
        self.agents = [a for a in live if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Global state: vehicles on each edge over its storage (queue model) or capacity
        (BPR model)."""
        core = self.core
        room = self.net.storage if core.queue_model else self.net.capacity
        return (core.count / room).astype(np.float32)
