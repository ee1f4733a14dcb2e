"""Run one episode of a batched policy, optionally recording every agent's trajectory or only
its decisions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from relied.env.core import AT_NODE, RoutingCore
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
class DecisionRecord:
    """Every learner's decisions in one episode (a decision: a step at which the learner is at
    a node, the no-op masked), in step order and by agent within a step: ``step``, ``agent``,
    ``obs (R, obs_dim)``, ``mask (R, K+1)``, ``action`` and ``cum``, the agent's reward summed
    over the steps before (float64); ``returns (n,)``, each agent's episode total, and
    ``steps``, the episode's length. Memory grows with the decisions, not with ``steps x n``;
    a decision's reward (its agent's rewards until its next decision) is the difference of
    two ``cum``, or of ``returns`` and ``cum`` after its last one, the same values as summed
    from the dense rewards (:meth:`of`)."""

    step: np.ndarray
    agent: np.ndarray
    obs: np.ndarray
    mask: np.ndarray
    action: np.ndarray
    cum: np.ndarray
    returns: np.ndarray
    steps: int

    ROWS = ("step", "agent", "obs", "mask", "action", "cum")

    @classmethod
    def of(cls, traj: Trajectories) -> DecisionRecord:
        """The decision rows of dense trajectories."""
        step, agent = np.nonzero(~traj.mask[:, :, -1])
        cum = np.concatenate([np.zeros((1, traj.reward.shape[1])),
                              np.cumsum(traj.reward, axis=0, dtype=np.float64)])
        return cls(step, agent, traj.obs[step, agent], traj.mask[step, agent],
                   traj.action[step, agent], cum[step, agent], cum[-1],
                   int(traj.reward.shape[0]))

    def __len__(self) -> int:
        return len(self.step)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, k).nbytes for k in (*self.ROWS, "returns"))


class DecisionRecorder:
    """Collects an episode's decision rows step by step (:class:`DecisionRecord`): call
    :meth:`add` before each step with the deciding learners, their observations, the mask, the
    actions and the learners' summed rewards so far, then :meth:`record` at the end."""

    def __init__(self, obs_dim: int, k: int):
        self.shapes = ((), (), (obs_dim,), (k + 1,), (), ())
        self.parts: list[list[np.ndarray]] = [[] for _ in DecisionRecord.ROWS]

    def add(self, t: int, rows: np.ndarray, obs: np.ndarray, mask: np.ndarray,
            actions: np.ndarray, returns: np.ndarray) -> None:
        """``obs``: the rows' observations (``len(rows)`` of them); ``mask``, ``actions`` and
        ``returns``: of every learner."""
        for part, value in zip(self.parts, (np.full(rows.size, t, dtype=np.int64), rows, obs,
                                            mask[rows], actions[rows], returns[rows]),
                               strict=True):
            part.append(value)

    def record(self, returns: np.ndarray, steps: int) -> DecisionRecord:
        dtypes = (np.int64, np.int64, np.float32, bool, np.int64, np.float64)
        cols = [np.concatenate(p) if p else np.zeros((0, *shape), dtype)
                for p, shape, dtype in zip(self.parts, self.shapes, dtypes, strict=True)]
        return DecisionRecord(*cols, returns.copy(), int(steps))


@dataclass
class Episode:
    metrics: dict[str, float]
    returns: np.ndarray
    steps: int
    wall_s: float
    trajectories: Trajectories | None = None
    routes: list[list[int]] = field(default_factory=list)
    decisions: DecisionRecord | None = None


def run_episode(core: RoutingCore, policy: BatchPolicy, record: bool = False,
                decisions: bool = False) -> Episode:
    """Reset ``core`` and run ``policy`` until every agent arrived or the horizon ends. Only a
    recorded episode builds observations; otherwise the core is driven with ``advance()``
    (a policy observes what it needs itself; the episode is the same). ``record``: the dense
    per-step arrays of every learner (:class:`Trajectories`); ``decisions``: only the
    deciding learners' rows (:class:`DecisionRecord`, their observations alone are built:
    ``RoutingCore.observe(rows)``, equal to those rows of the full observation)."""
    if record and decisions:
        raise ValueError("record either the dense trajectories or the decisions, not both")
    obs = core.reset()
    returns = np.zeros(core.n)
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "mask", "reward", "done")}
    recorder = DecisionRecorder(core.obs_dim, core.k) if decisions else None
    rows = np.flatnonzero(core.status == AT_NODE)
    obs = obs[rows] if decisions else obs
    start = time.perf_counter()
    while not core.done:
        if not (record or decisions):
            returns += core.advance(policy(core))[0]
            continue
        mask = core.action_mask()
        actions = policy(core)
        if recorder is not None:
            recorder.add(core.t, rows, obs, mask, actions, returns)
            returns += core.advance(actions)[0]
            rows = np.flatnonzero(core.status == AT_NODE)
            obs = core.observe(rows)
            continue
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
    return Episode(metrics, returns, core.t, wall, traj, routes,
                   recorder.record(returns, core.t) if recorder is not None else None)
