"""Run one episode of a batched policy, optionally recording every agent's trajectory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from relied.env.core import RoutingCore
from relied.env.policies import BatchPolicy


@dataclass
class Trajectories:
    """Per-step arrays for all agents: ``obs (T, n, obs_dim)``, ``action/reward/done (T, n)``,
    ``mask (T, n, K+1)``. ``done`` is terminated or truncated at that step."""

    obs: np.ndarray
    action: np.ndarray
    mask: np.ndarray
    reward: np.ndarray
    done: np.ndarray


@dataclass
class Episode:
    metrics: dict[str, float]
    returns: np.ndarray
    steps: int
    wall_s: float
    trajectories: Trajectories | None = None
    routes: list[list[int]] = field(default_factory=list)


def run_episode(core: RoutingCore, policy: BatchPolicy, record: bool = False) -> Episode:
    """Reset ``core`` and run ``policy`` until every agent arrived or the horizon ends. Only a
    recorded episode builds observations; otherwise the core is driven with ``advance()``
    (a policy observes what it needs itself; the episode is the same)."""
    obs = core.reset()
    returns = np.zeros(core.n)
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "mask", "reward", "done")}
    start = time.perf_counter()
    while not core.done:
        if not record:
            reward = core.advance(policy(core))[0]
            returns += reward
            continue
        mask = core.action_mask()
        actions = policy(core)
        next_obs, reward, term, trunc = core.step(actions)
        returns += reward
        for key, value in zip(buf, (obs, actions, mask, reward, term | trunc), strict=True):
            buf[key].append(value)
        obs = next_obs
    wall = time.perf_counter() - start
    metrics = core.metrics()
    metrics["mean_return"] = float(returns.mean())
    metrics["agent_steps_per_s"] = core.n * core.t / max(wall, 1e-9)
    traj = Trajectories(**{k: np.stack(v) for k, v in buf.items()}) if record else None
    routes = core.agent_routes() if core.record_routes else []
    return Episode(metrics, returns, core.t, wall, traj, routes)
