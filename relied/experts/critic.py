"""The stationarity check of a joint plan, computed in code (the critic agent calls it).

A plan (one node route per agent, contiguous node indices) is executed in the environment;
from that execution come the expert trajectories, the interaction subsets ``G(i)`` and the
divergence term; ``executions`` more runs with every departure perturbed by up to ``jitter_s``
give ``Vol_ext(i)``. By default (``volatility="all"``) all agents are perturbed at once:
``executions`` simulations instead of one set per group, and the jitter of ``G(i)`` itself is
included, so the estimate errs high; ``volatility="outside-group"`` perturbs only the agents
outside ``G(i)``, as the bound defines it.
The plan is accepted when every agent's bound is at most ``epsilon`` and the plan's mean
executed return is not below the free-flow shortest-path baseline (minus ``return_tolerance``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from relied.env.core import AT_NODE, ON_EDGE, RoutingCore
from relied.env.network import CityNetwork
from relied.env.policies import BatchPolicy, RoutePolicy, ShortestPathPolicy
from relied.env.rollout import Trajectories
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import (
    BoundConfig,
    PolicyProbs,
    expert_divergence,
    interaction_groups,
    stationarity_bound,
)
from relied.experts.demos import load_batch


@dataclass
class Execution:
    """One recorded run: trajectories, returns, metrics and ``edges_by_step (T, n)``."""

    traj: Trajectories
    returns: np.ndarray
    metrics: dict[str, float]
    edges_by_step: np.ndarray


class AgentTerms(BaseModel):
    agent_id: int
    bound: float
    external_term: float
    divergence_term: float
    group_size: int


class StationarityReport(BaseModel):
    """Outcome of the check; ``offenders`` are sorted by bound, worst first."""

    accepted: bool
    epsilon: float
    bounds: list[float]
    offenders: list[AgentTerms]
    shared_edges: list[tuple[int, int, int]]  # (from OSM id, to OSM id, agents in conflict)
    plan_mean_return: float
    baseline_mean_return: float
    too_slow: bool = Field(description="mean return below the baseline minus the tolerance")
    mean_travel_time: float
    reason: str


def execute(net: CityNetwork, scenario: Scenario, policy_for: type[BatchPolicy] | None = None,
            routes: Sequence[Sequence[int]] | None = None) -> Execution:
    """Run ``routes`` (or ``ShortestPathPolicy`` when None) and record everything."""
    core = RoutingCore(net, scenario)
    policy = RoutePolicy(core, [list(r) for r in routes]) if routes is not None \
        else (policy_for or ShortestPathPolicy)()
    obs = core.reset()
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "mask", "reward", "done")}
    edges, returns = [], np.zeros(core.n)
    while not core.done:
        mask = core.action_mask()
        actions = policy(core)
        deciding = core.status == AT_NODE
        on = np.where(core.status == ON_EDGE, core.edge, -1)
        slot = np.clip(actions, 0, core.k - 1)
        on[deciding] = core.out_table[core.node[deciding], slot[deciding]]
        edges.append(on)
        next_obs, reward, term, trunc = core.step(actions)
        returns += reward
        for key, value in zip(buf, (obs, actions, mask, reward, term | trunc), strict=True):
            buf[key].append(value)
        obs = next_obs
    traj = Trajectories(**{k: np.stack(v) for k, v in buf.items()})
    return Execution(traj, returns, core.metrics(), np.stack(edges))


def jittered(scenario: Scenario, jitter_s: float, rng: np.random.Generator,
             keep: Sequence[int] = ()) -> Scenario:
    """Departures delayed by up to ``jitter_s``, except those of the agents in ``keep``."""
    base = np.asarray(scenario.departures_s, dtype=float)
    shift = rng.uniform(0, jitter_s, base.size)
    shift[list(keep)] = 0.0
    return scenario.model_copy(update={"departures_s": np.round(base + shift, 1).tolist()})


def return_volatility(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
                      config: BoundConfig,
                      groups: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """``Vol_ext``: std of each agent's return over ``config.executions`` perturbed runs
    (with ``volatility="outside-group"``, runs in which only agents outside ``G(i)`` move)."""
    rng = np.random.default_rng(config.seed)
    if config.volatility == "all" or groups is None:
        runs = [execute(net, jittered(scenario, config.jitter_s, rng), routes=routes).returns
                for _ in range(config.executions)]
        return np.std(np.stack(runs), axis=0)
    vol = np.zeros(scenario.n_agents)
    members: dict[tuple[int, ...], list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(tuple(sorted(group)), []).append(i)
    for group, agents in members.items():
        runs = [execute(net, jittered(scenario, config.jitter_s, rng, keep=group),
                        routes=routes).returns[agents] for _ in range(config.executions)]
        vol[agents] = np.std(np.stack(runs), axis=0)
    return vol


def _shared_edges(net: CityNetwork, edges_by_step: np.ndarray, agents: list[int],
                  top: int = 8) -> list[tuple[int, int, int]]:
    """Edges most used by more than one of ``agents`` (most crowded first)."""
    users: dict[int, set[int]] = {}
    for i in agents:
        for e in np.unique(edges_by_step[:, i]):
            if e >= 0:
                users.setdefault(int(e), set()).add(i)
    crowd = Counter({e: len(u) for e, u in users.items() if len(u) > 1})
    return [(int(net.osm_ids[net.edge_src[e]]), int(net.osm_ids[net.edge_dst[e]]), c)
            for e, c in crowd.most_common(top)]


def check_plan(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
               config: BoundConfig, policy_probs: PolicyProbs | None = None,
               planner_groups: Sequence[Sequence[int]] | None = None,
               baseline_return: float | None = None) -> tuple[StationarityReport, Execution]:
    """Evaluate a joint plan (node indices per agent); returns the report and its execution."""
    scenario = scenario.resolve(net)
    run = execute(net, scenario, routes=routes)
    groups = interaction_groups(run.edges_by_step, config.group, planner_groups)
    div = expert_divergence(run.traj.obs, run.traj.action, run.traj.mask, scenario.n_agents,
                            policy_probs, config.divergence)
    vol = return_volatility(net, scenario, routes, config, groups)
    bound, ext, dterm = stationarity_bound(vol, div, groups, config.gamma, scenario.reward_bound)
    if baseline_return is None:
        baseline_return = float(execute(net, scenario).returns.mean())
    plan_return = float(run.returns.mean())
    bad = np.flatnonzero(bound > config.epsilon)
    bad = bad[np.argsort(-bound[bad], kind="stable")]
    offenders = [AgentTerms(agent_id=int(i), bound=float(bound[i]), external_term=float(ext[i]),
                            divergence_term=float(dterm[i]), group_size=len(groups[i]))
                 for i in bad]
    conflict = sorted({j for i in bad for j in groups[i]})
    shared = _shared_edges(net, run.edges_by_step, conflict) if bad.size else []
    short = plan_return < baseline_return - config.return_tolerance
    reasons = []
    if bad.size:
        reasons.append(f"{bad.size} agents exceed epsilon={config.epsilon:.0f} (worst: agent "
                       f"{int(bad[0])}, bound {bound[bad[0]]:.0f}, shares edges with "
                       f"{len(groups[bad[0]]) - 1} agents); spread the listed agents over "
                       "other streets or away from the shared edges")
    if short:
        reasons.append(f"mean return {plan_return:.3f} is below the free-flow shortest-path "
                       f"baseline {baseline_return:.3f}; use faster routes")
    report = StationarityReport(
        accepted=not reasons, epsilon=config.epsilon, bounds=bound.round(3).tolist(),
        offenders=offenders, shared_edges=shared, plan_mean_return=plan_return,
        baseline_mean_return=baseline_return, too_slow=short,
        mean_travel_time=run.metrics["mean_travel_time"],
        reason="; ".join(reasons) or "every agent's bound is under epsilon and the mean return "
        "is not below the shortest-path baseline")
    return report, run


def recheck_batch(path: Path, policy_probs: PolicyProbs | None = None,
                  config: BoundConfig | None = None) -> StationarityReport:
    """Recompute a stored batch's bound with the learners' current policies (during training).

    ``config`` defaults to the bound settings stored with the batch.
    """
    from relied.env.cities import load_city

    _, meta = load_batch(path)
    net = load_city(meta.scenario.city)
    config = config or BoundConfig(**meta.extra.get("bound", {}))
    routes = [index_of(net, r).tolist() for r in meta.routes]
    return check_plan(net, meta.scenario, routes, config, policy_probs)[0]
