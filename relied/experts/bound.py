"""Stationarity bound of RELED (our reconstruction; the paper's text is only partly public).

For agent ``i`` with interaction subset ``G(i)`` the non-stationarity it faces when the agents
learn from a plan is bounded by

    NS_i <= c1 * Vol_ext(i) + c2 * sum_{j in G(i), j != i} E_o[ D(pi_j'(.|o), pi_j(.|o)) ]

with ``c1 = 1 / (1 - gamma)``, ``c2 = 2 gamma R_max / (1 - gamma)^2`` (``R_max`` the env's
reward bound), ``Vol_ext(i)`` the spread (std) of ``i``'s return over executions of the plan in
which the other agents vary, and ``D`` the total-variation distance between agent ``j``'s
current policy ``pi_j`` and the policy the plan would teach it, ``pi_j'`` (a point mass on the
expert's action), averaged over the expert's observations of ``j``. ``TV(onehot_a, p) = 1 - p_a``.
The KL variant bounds TV through Pinsker: ``D = min(1, sqrt(KL(onehot_a || p) / 2))`` with
``KL = -log p_a``. Before any training ``pi_j`` is uniform over the valid actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: ``policy_probs(obs (M, obs_dim), mask (M, K+1), agent_ids (M,)) -> probs (M, K+1)``.
PolicyProbs = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class BoundConfig(BaseModel):
    """Settings of the stationarity critic."""

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.95, gt=0, lt=1, description="discount of the learners")
    epsilon: float = Field(12_000.0, gt=0, description="largest accepted bound of one agent "
                           "(about 4 co-occupying agents at untrained policies, gamma 0.95)")
    divergence: Literal["tv", "kl"] = Field("tv", description="'kl' = KL through Pinsker")
    group: Literal["co-occupancy", "shared-edges", "planner"] = Field(
        "co-occupancy", description="G(i): agents on one edge with i at the same step, agents "
        "using any edge of i's route within the horizon, or i's planner group")
    executions: int = Field(4, ge=2, le=64, description="perturbed executions for Vol_ext")
    jitter_s: float = Field(30.0, ge=0, description="departure perturbation of executions")
    volatility: Literal["all", "outside-group"] = Field(
        "all", description="Vol_ext runs jitter every departure at once ('all': `executions` "
        "simulations, an upper estimate) or only those of agents outside G(i) ('outside-group':"
        " the definition, `executions` simulations per distinct group)")
    return_tolerance: float = Field(0.05, ge=0, description="allowed mean-return shortfall "
                                    "against the free-flow shortest-path baseline")
    seed: int = 0


def bound_constants(gamma: float, r_max: float) -> tuple[float, float]:
    """``(c1, c2) = (1/(1-gamma), 2 gamma R_max / (1-gamma)^2)``."""
    return 1.0 / (1.0 - gamma), 2.0 * gamma * r_max / (1.0 - gamma) ** 2


def divergence_to_expert(probs: np.ndarray, expert_action: np.ndarray,
                         kind: str = "tv") -> np.ndarray:
    """Per-row distance between ``probs`` (M, A) and a point mass on ``expert_action`` (M,)."""
    p = np.clip(probs[np.arange(len(expert_action)), expert_action], 0.0, 1.0)
    if kind == "tv":
        return 1.0 - p
    if kind == "kl":
        kl = -np.log(np.maximum(p, 1e-12))
        return np.minimum(1.0, np.sqrt(kl / 2.0))
    raise ValueError(f"unknown divergence '{kind}'; use 'tv' or 'kl'")


def uniform_probs(obs: np.ndarray, mask: np.ndarray, agent_ids: np.ndarray) -> np.ndarray:
    """The untrained policy: uniform over the valid actions of each row."""
    m = mask.astype(np.float64)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)


def expert_divergence(obs: np.ndarray, action: np.ndarray, mask: np.ndarray, n_agents: int,
                      policy_probs: PolicyProbs | None = None, kind: str = "tv") -> np.ndarray:
    """Mean divergence per agent over its decision steps of an expert trajectory.

    ``obs (T, n, d)``, ``action (T, n)``, ``mask (T, n, K+1)``: decision steps are those where
    the no-op is masked. Agents without a decision step get 0.
    """
    noop = mask.shape[-1] - 1
    steps, agents = np.nonzero(~mask[:, :, noop])
    if steps.size == 0:
        return np.zeros(n_agents)
    probs_fn = policy_probs or uniform_probs
    probs = np.asarray(probs_fn(obs[steps, agents], mask[steps, agents], agents), dtype=np.float64)
    if probs.shape != (steps.size, mask.shape[-1]):
        raise ValueError(f"policy_probs returned shape {probs.shape}, expected "
                         f"{(steps.size, mask.shape[-1])}")
    d = divergence_to_expert(probs, action[steps, agents], kind)
    total = np.bincount(agents, weights=d, minlength=n_agents)
    count = np.bincount(agents, minlength=n_agents)
    return total / np.maximum(count, 1)


def stationarity_bound(vol_ext: np.ndarray, divergence: np.ndarray, groups: Sequence[Sequence[int]],
                       gamma: float, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-agent ``(bound, external_term, divergence_term)``.

    ``groups[i]`` lists the members of ``G(i)``; ``i`` itself is skipped if present.
    """
    c1, c2 = bound_constants(gamma, r_max)
    vol = np.asarray(vol_ext, dtype=np.float64)
    div = np.asarray(divergence, dtype=np.float64)
    ext = c1 * vol
    inner = np.array([sum(div[j] for j in g if j != i) for i, g in enumerate(groups)], dtype=float)
    div_term = c2 * inner
    return ext + div_term, ext, div_term


def interaction_groups(edges_by_step: np.ndarray, mode: str = "co-occupancy",
                       planner_groups: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """``G(i)`` for every agent (including ``i``).

    ``edges_by_step (T, n)``: the edge each agent is on at each step, -1 when none.
    """
    _, n = edges_by_step.shape
    if mode == "planner":
        if planner_groups is None:
            return [list(range(n)) for _ in range(n)]
        of = {a: list(g) for g in planner_groups for a in g}
        return [of.get(i, [i]) for i in range(n)]
    t, a = np.nonzero(edges_by_step >= 0)
    e = edges_by_step[t, a]
    key = e if mode == "shared-edges" else t * (int(e.max(initial=0)) + 1) + e
    if mode not in ("shared-edges", "co-occupancy"):
        raise ValueError(f"unknown group mode '{mode}'; use co-occupancy, shared-edges or planner")
    pairs = np.unique(np.stack([key, a], axis=1), axis=0)
    groups: list[set[int]] = [{i} for i in range(n)]
    uniq, start = np.unique(pairs[:, 0], return_index=True)
    bounds = np.append(start, len(pairs))
    for s, f in zip(bounds[:-1], bounds[1:], strict=True):
        members = pairs[s:f, 1].tolist()
        if len(members) > 1:
            for m in members:
                groups[m].update(members)
    return [sorted(g) for g in groups]
