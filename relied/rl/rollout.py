"""Sampling episodes from a vector env, and turning per-step arrays into decision transitions.

Agents act only at nodes: most simulator steps are no-ops for most agents. Learning uses only
*decision transitions* (steps where the agent is at a node and its mask offers out-edges). The
reward of a decision is the sum of the agent's rewards until its next decision (or the episode
end), i.e. minus the minutes its chosen edge took, plus the arrival bonus or timeout penalty
on its last decision; ``gamma`` discounts per decision (a semi-MDP over decisions). The
horizon is part of the task (the timeout penalty, elapsed time is observed), so an agent's
last decision is terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from relied.env.rollout import Trajectories


@dataclass
class Decisions:
    """Decision transitions sorted by (agent, time): per row ``obs, mask, action, reward,
    agent, t, end`` (last decision of the agent's episode), ``gstate`` (the env's global state
    at that step for MAPPO's value function; width 0 otherwise) and ``scenario`` (index of the
    demonstrated scenario an expert row belongs to; 0 for rollouts)."""

    obs: np.ndarray
    mask: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    agent: np.ndarray
    t: np.ndarray
    end: np.ndarray
    gstate: np.ndarray
    scenario: np.ndarray | None = None  # filled with zeros when not given

    def __post_init__(self) -> None:
        if self.scenario is None:
            self.scenario = np.zeros(len(self.action), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.action)

    @staticmethod
    def concat(parts: list[Decisions]) -> Decisions:
        return Decisions(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in Decisions.__dataclass_fields__))


def decisions_from(traj: Trajectories, k: int, state: np.ndarray | None = None,
                   scenario: int = 0) -> Decisions:
    """Decision transitions of every agent in one episode's ``(T, n, ...)`` arrays; ``state``
    (``(T, S)``) gives each row its step's global state."""
    deciding = traj.mask[:, :, :k].any(axis=2)
    agent, t = np.nonzero(deciding.T)  # sorted by agent, then time
    steps = traj.reward.shape[0]
    same_next = np.zeros(len(agent), dtype=bool)
    same_next[:-1] = agent[1:] == agent[:-1]
    t_next = np.where(same_next, np.roll(t, -1), steps)
    cum = np.concatenate([np.zeros((1, traj.reward.shape[1])), np.cumsum(traj.reward, axis=0)])
    reward = cum[t_next, agent] - cum[t, agent]
    gstate = state[t] if state is not None else np.zeros((len(t), 0))
    return Decisions(obs=traj.obs[t, agent].astype(np.float32), mask=traj.mask[t, agent],
                     action=traj.action[t, agent].astype(np.int64),
                     reward=reward.astype(np.float32), agent=agent.astype(np.int64),
                     t=t.astype(np.int64), end=~same_next, gstate=gstate.astype(np.float32),
                     scenario=np.full(len(t), scenario, dtype=np.int64))


def gae(dec: Decisions, value: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Advantages by GAE over each agent's decisions: rows are chains of one agent's
    decisions in time order, each chain closed by an ``end`` row whose next value is 0.
    ``A_k = delta_k + gamma * lam * A_{k+1}`` with ``delta_k = r_k + gamma * V_{k+1} - V_k``;
    ``value=0, lam=1`` gives the discounted return. Vectorised over chains: one pass per
    depth from the chains' ends (the longest chain's length), not one per row."""
    value = np.asarray(value, dtype=np.float64)
    reward = np.asarray(dec.reward, dtype=np.float64)
    end = np.asarray(dec.end, dtype=bool).copy()
    if len(end) == 0:
        return np.zeros(0)
    end[-1] = True  # a chain never runs past the data
    next_value = np.where(end, 0.0, np.roll(value, -1))
    delta = reward + gamma * next_value - value
    ends = np.flatnonzero(end)
    chain_end = ends[np.searchsorted(ends, np.arange(len(end)))]
    depth = chain_end - np.arange(len(end))  # 0 at each chain's last decision
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max()) + 2))
    adv = np.zeros_like(delta)
    for d in range(len(bounds) - 1):
        rows = order[bounds[d]:bounds[d + 1]]
        adv[rows] = delta[rows] + (gamma * lam * adv[rows + 1] if d else 0.0)
    return adv


@dataclass
class EpisodeRecord:
    """One finished episode of one env: trajectories, decision nodes, metrics, arrivals."""

    traj: Trajectories
    node: np.ndarray
    metrics: dict[str, float]
    arrived: np.ndarray
    state: np.ndarray | None = None  # (T, n_edges) global state, when the env reports it

    @property
    def steps(self) -> int:
        return self.traj.action.shape[0]


Act = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def collect(venv, act: Act, obs_dim: int, k: int, options: dict | None = None
            ) -> list[EpisodeRecord]:
    """Run every env of ``venv`` for one full episode (reset with ``options``);
    ``act(obs, mask, agent)`` chooses the actions of the deciding agents of all envs in one
    call."""
    n_envs = len(venv)
    obs, info = venv.reset(options=options or {})
    buf = [{"obs": [], "mask": [], "action": [], "reward": [], "node": [], "state": []}
           for _ in range(n_envs)]
    records: list[EpisodeRecord | None] = [None] * n_envs
    active = list(range(n_envs))
    nodes = [info[e]["node"] for e in range(n_envs)]
    states = [info[e].get("state") for e in range(n_envs)]
    while active:
        o, m = obs[..., :obs_dim], obs[..., obs_dim:] > 0.5
        deciding = m[:, :, :k].any(axis=2)
        actions = np.full(deciding.shape, k, dtype=np.int64)
        env_i, agent_i = np.nonzero(deciding)
        if len(env_i):
            actions[env_i, agent_i] = act(o[env_i, agent_i], m[env_i, agent_i], agent_i)
        next_obs, rew, term, _, info = venv.step(actions, id=active)
        for j, e in enumerate(active):
            b = buf[e]
            for key, value in (("obs", o[j]), ("mask", m[j]), ("action", actions[j]),
                               ("reward", rew[j]), ("node", nodes[e])):
                b[key].append(value)
            if states[e] is not None:
                b["state"].append(states[e])
            nodes[e], states[e] = info[j]["node"], info[j].get("state")
            if term[j]:
                traj = Trajectories(obs=np.stack(b["obs"]), mask=np.stack(b["mask"]),
                                    action=np.stack(b["action"]), reward=np.stack(b["reward"]),
                                    done=_done_at_end(len(b["obs"]), o.shape[1]))
                records[e] = EpisodeRecord(traj, np.stack(b["node"]), info[j]["metrics"],
                                           info[j]["arrived"],
                                           np.stack(b["state"]) if b["state"] else None)
        keep = ~np.asarray(term, dtype=bool)
        active = [e for e, kept in zip(active, keep, strict=True) if kept]
        obs = next_obs[keep]
    return records  # type: ignore[return-value]


def _done_at_end(steps: int, n: int) -> np.ndarray:
    done = np.zeros((steps, n), dtype=bool)
    done[-1] = True
    return done
