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


class DecisionBuffer:
    """One env's decision rows in preallocated columns (capacity doubles when full, so the
    cost per row is amortised O(1) and nothing is kept per step or per agent object):
    ``obs, mask, action, agent, t, node`` and ``cum``, the agent's summed reward before that
    step; ``gstate`` when the env reports a global state."""

    def __init__(self, obs_dim: int, k: int, state_dim: int = 0, capacity: int = 1024):
        self.size = 0
        self.cols = {"obs": np.empty((capacity, obs_dim), np.float32),
                     "mask": np.empty((capacity, k + 1), bool),
                     "action": np.empty(capacity, np.int64),
                     "agent": np.empty(capacity, np.int64),
                     "t": np.empty(capacity, np.int64),
                     "node": np.empty(capacity, np.int64),
                     "cum": np.empty(capacity, np.float64),
                     "gstate": np.empty((capacity, state_dim), np.float32)}

    def add(self, **rows: np.ndarray) -> None:
        m = len(rows["agent"])
        need = self.size + m
        cap = len(self.cols["agent"])
        if need > cap:
            cap = max(need, 2 * cap)
            for key, col in self.cols.items():
                grown = np.empty((cap, *col.shape[1:]), col.dtype)
                grown[: self.size] = col[: self.size]
                self.cols[key] = grown
        for key, value in rows.items():
            self.cols[key][self.size:need] = value
        self.size = need

    def decisions(self, returns: np.ndarray) -> tuple[Decisions, np.ndarray]:
        """The rows as :class:`Decisions` sorted by (agent, time) and their nodes; a row's
        reward is the agent's reward summed until its next decision (``returns``, the
        episode's per-agent total, after its last), as :func:`decisions_from` computes it."""
        c = {key: col[: self.size] for key, col in self.cols.items()}
        order = np.argsort(c["agent"], kind="stable")  # rows were added in time order
        c = {key: col[order] for key, col in c.items()}
        agent = c["agent"]
        same_next = np.zeros(len(agent), dtype=bool)
        same_next[:-1] = agent[1:] == agent[:-1]
        cum_next = np.where(same_next, np.roll(c["cum"], -1), returns[agent])
        dec = Decisions(obs=c["obs"], mask=c["mask"], action=c["action"],
                        reward=(cum_next - c["cum"]).astype(np.float32), agent=agent,
                        t=c["t"], end=~same_next, gstate=c["gstate"])
        return dec, c["node"]


@dataclass
class EpisodeRecord:
    """One finished episode of one env: its decision transitions (sorted by agent, then
    time) with each decision's agent and node, per-agent returns, metrics and arrivals."""

    dec: Decisions
    agent: np.ndarray  # ``dec.agent``, kept when ``dec`` is handed on
    node: np.ndarray
    returns: np.ndarray
    metrics: dict[str, float]
    arrived: np.ndarray
    steps: int


Act = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def collect(venv, act: Act, obs_dim: int, k: int, options: dict | None = None
            ) -> list[EpisodeRecord]:
    """Run every env of ``venv`` for one full episode (reset with ``options``);
    ``act(obs, mask, agent)`` chooses the actions of the deciding agents of all envs in one
    call. Only decision rows are stored (:class:`DecisionBuffer`); rewards are summed per
    agent as they come."""
    n_envs = len(venv)
    obs, info = venv.reset(options=options or {})
    n = obs.shape[1]
    states = [info[e].get("state") for e in range(n_envs)]
    state_dim = 0 if states[0] is None else len(states[0])
    bufs = [DecisionBuffer(obs_dim, k, state_dim, capacity=4 * n) for _ in range(n_envs)]
    cum = np.zeros((n_envs, n))
    records: list[EpisodeRecord | None] = [None] * n_envs
    active = np.arange(n_envs)
    nodes = [info[e]["node"] for e in range(n_envs)]
    step = np.zeros(n_envs, dtype=np.int64)
    while len(active):
        m = obs[..., obs_dim:] > 0.5
        env_i, agent_i = np.nonzero(m[:, :, :k].any(axis=2))
        actions = np.full(m.shape[:2], k, dtype=np.int64)
        if len(env_i):
            o = obs[env_i, agent_i, :obs_dim]
            chosen = act(o, m[env_i, agent_i], agent_i)
            actions[env_i, agent_i] = chosen
            bounds = np.searchsorted(env_i, np.arange(len(active) + 1))
            for j, e in enumerate(active):
                rows = slice(bounds[j], bounds[j + 1])
                if bounds[j + 1] > bounds[j]:
                    a = agent_i[rows]
                    extra = {"gstate": states[e][None].repeat(len(a), 0)} if state_dim else {}
                    bufs[e].add(obs=o[rows], mask=m[env_i[rows], a], action=chosen[rows],
                                agent=a, t=np.full(len(a), step[e]), node=nodes[e][a],
                                cum=cum[e, a], **extra)
        next_obs, rew, term, _, info = venv.step(actions, id=active.tolist())
        cum[active] += rew
        step[active] += 1
        for j, e in enumerate(active):
            nodes[e], states[e] = info[j]["node"], info[j].get("state")
            if term[j]:
                dec, node = bufs[e].decisions(cum[e])
                records[e] = EpisodeRecord(dec, dec.agent, node, cum[e].copy(), info[j]["metrics"],
                                           info[j]["arrived"], int(step[e]))
                bufs[e] = None  # type: ignore[assignment]  # free its columns now
        keep = ~np.asarray(term, dtype=bool)
        active = active[keep]
        obs = next_obs[keep]
    return records  # type: ignore[return-value]
