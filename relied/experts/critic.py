"""The stationarity check of a joint plan, computed in code (the critic agent calls it).

A plan (one node route per agent, contiguous node indices) is executed in the environment;
from that execution come the expert trajectories, the interaction subsets ``G(i)`` and the
divergence term (:func:`relied.experts.bound.policy_divergence`: the learners' last step and
their distance to the plan, on the states the plan visits).

``Vol_ext(i)`` is resimulated, seeded: in each resimulation a held set of agents keeps the plan
and every other agent changes behaviour with probability ``switch_share``: it drives its
alternative route (congestion-aware, or free-flow shortest path; whichever differs from its
plan route) and departs up to ``jitter_s`` later. Agent ``i``'s sample is the plan's execution
plus every resimulation in which no member of ``G(i)`` (``i`` included) changed, so only agents
outside ``G(i)`` ever moved. Its local environment is the cells of its plan route (edge, entry
minute; :data:`CELL_S`) with their travel times (the mean over all vehicles that entered the
cell); ``Vol_ext(i)`` is the mean over those cells of the std of the cell's time over its sample,
in reward units per decision (``/ time_scale_s``). A shared pool of ``executions``
resimulations (nobody held) serves most agents; agents left with fewer than ``min_runs``
samples get resimulations in which their groups are held (packed together while the held set
stays at most half the agents), up to ``3 * executions`` in all.

``agents`` (optional, every public entry point): the agents a check is about, e.g. the sampled
agents of a large fleet whose plans are demonstrated (docs/experts.md, "At scale"). Bounds are
still computed for everyone; the means, offenders and the top-up resimulations are theirs.

Acceptance is scale-free: the bounds are scaled (:func:`relied.experts.bound.scaled_bound`:
each term over its level for the reference, the learners' current routes or the free-flow
shortest paths when not given, under the same policies); the plan's *mean* scaled bound must be
strictly below ``epsilon`` times the same mean for the reference (a plan must lower the
non-stationarity of the learners' current behaviour; the reference fails its own check), or
at that threshold (within :data:`~relied.experts.bound.TIE_TOLERANCE`) when its mean
``Vol_ext`` is ``negligible`` (and measured for every judged agent: some outsider moved in its
sample): the others do not move its travel times, so there is nothing to lower; and the
plan's mean return must not be below the free-flow shortest-path baseline minus
``return_tolerance``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from relied.env.core import AT_NODE, ON_EDGE, RoutingCore
from relied.env.forecast import drive
from relied.env.network import CityNetwork
from relied.env.policies import (
    BatchPolicy,
    CongestionAwarePolicy,
    RoutePolicy,
    ShortestPathPolicy,
)
from relied.env.rollout import DecisionRecord, DecisionRecorder, Trajectories
from relied.env.sample import FleetSample
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import (
    LOOKAHEAD_VERSION,
    TIE_TOLERANCE,
    BoundConfig,
    Lookahead,
    PolicyProbs,
    TrialUpdate,
    divergence_between,
    divergence_to_expert,
    interaction_groups,
    scaled_bound,
    stationarity_bound,
    term_scales,
    threshold,
    uniform_probs,
)
from relied.experts.demos import load_batch
from relied.experts.learners import Learners

#: a cell of an agent's local environment: one edge entered within one such time bin
CELL_S = 60.0


@dataclass
class CellTimes:
    """What a resimulation keeps: ``cell_keys`` (sorted) and ``cell_times_s``, the mean
    traversal time of all vehicles that entered each (edge, :data:`CELL_S` bin) cell."""

    cell_keys: np.ndarray
    cell_times_s: np.ndarray


class DecisionRows(DecisionRecord):
    """Every learner's decisions in one run (:class:`~relied.env.rollout.DecisionRecord`:
    the no-op masked, in step order and by agent within a step, with their summed rewards);
    the rows of the dense ``(T, n, ...)`` arrays that the divergence term reads, and what a
    demonstration batch stores."""

    def divergence(self, n_agents: int, policy_probs: PolicyProbs | None = None,
                   previous_probs: PolicyProbs | None = None,
                   kind: str = "tv") -> tuple[np.ndarray, np.ndarray]:
        """:func:`relied.experts.bound.policy_divergence` on these rows (the same values)."""
        if self.step.size == 0:
            return np.zeros(n_agents), np.zeros(n_agents)

        def probs(fn: PolicyProbs) -> np.ndarray:
            out = np.asarray(fn(self.obs, self.mask, self.agent), dtype=np.float64)
            if out.shape != self.mask.shape:
                raise ValueError(f"policy_probs returned shape {out.shape}, expected "
                                 f"{self.mask.shape}")
            return out

        current = probs(policy_probs or uniform_probs)
        to_plan = divergence_to_expert(current, self.action, kind)
        step = divergence_between(current, probs(previous_probs), kind) \
            if previous_probs is not None else np.zeros(self.step.size)
        count = np.maximum(np.bincount(self.agent, minlength=n_agents), 1)
        return (np.bincount(self.agent, weights=to_plan, minlength=n_agents) / count,
                np.bincount(self.agent, weights=step, minlength=n_agents) / count)


@dataclass
class Execution(CellTimes):
    """One recorded run of the plan: cell times (:class:`CellTimes`), ``returns``,
    ``metrics``, ``edges_by_step (T, n)``, ``agent_cells[i]`` (learner ``i``'s cells) and
    every learner's ``decisions`` (:class:`DecisionRows`: what it keeps per learner grows with
    its decisions, not with the steps; what a demonstration batch stores and the trial update
    reads). ``traj``, the dense ``(T, n, ...)`` per-step arrays, is recorded on first use by
    running the same execution again (the core is deterministic), unless :func:`execute`
    recorded it; nothing in a check or a batch reads it. ``driven``: each learner's node
    route as driven (``execute(record_routes=True)``); ``exact_replay``: these routes, given
    as a plan, repeat this very run (every edge taken is the one ``RoutePolicy`` takes between
    its nodes and no route holds a node twice), so a check of that plan may reuse it."""

    returns: np.ndarray
    metrics: dict[str, float]
    edges_by_step: np.ndarray
    agent_cells: list[np.ndarray]
    decisions: DecisionRows
    replay: tuple[CityNetwork, Scenario, type[BatchPolicy] | None, list[list[int]] | None]
    recorded: Trajectories | None = None
    driven: list[list[int]] | None = None
    exact_replay: bool = False

    @property
    def traj(self) -> Trajectories:
        if self.recorded is None:
            self.recorded = execute(*self.replay, trajectories=True).recorded
        return self.recorded


def _cell_keys(core: RoutingCore) -> tuple[np.ndarray, np.ndarray]:
    """``(vehicle, cell key)`` of every traversal of a finished run."""
    veh, edge, entered, _ = _traversals(core)
    bins = int(core.scenario.horizon_s // CELL_S) + 2
    return veh, edge.astype(np.int64) * bins + np.minimum(entered // CELL_S,
                                                           bins - 1).astype(np.int64)


def _traversals(core: RoutingCore) -> tuple[np.ndarray, ...]:
    if not core.traversals:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*core.traversals, strict=True))


def _cell_times(core: RoutingCore) -> CellTimes:
    """The mean traversal time per cell of a finished run (all vehicles)."""
    _, key = _cell_keys(core)
    _, _, entered, left = _traversals(core)
    keys, inverse = np.unique(key, return_inverse=True)
    times = np.bincount(inverse, weights=left - entered) / np.bincount(inverse) \
        if key.size else np.zeros(0)
    return CellTimes(keys, times)


def _cells(core: RoutingCore) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(cell keys, mean traversal time per cell, each learner's cells)`` of a finished run."""
    table = _cell_times(core)
    veh, key = _cell_keys(core)
    if not key.size:
        return table.cell_keys, table.cell_times_s, [np.zeros(0, np.int64)] * core.n
    order = np.argsort(veh, kind="stable")
    split = np.searchsorted(veh[order], np.arange(core.n + 1))
    mine = [np.unique(key[order[a:b]]) for a, b in zip(split[:-1], split[1:], strict=True)]
    return table.cell_keys, table.cell_times_s, mine


class AgentTerms(BaseModel):
    agent_id: int
    bound: float
    external_term: float
    divergence_term: float
    group_size: int


class StationarityReport(BaseModel):
    """Outcome of the check; ``offenders`` (agents above ``epsilon``) are sorted by bound,
    worst first. ``bounds`` and their terms are scaled (each term counts 50 at the reference's
    level); ``epsilon`` is the threshold on their mean: ``threshold_ratio`` times the
    reference's mean scaled bound ``reference_bound``. ``absolute_bounds``: the bound in return
    units."""

    accepted: bool
    epsilon: float
    threshold_ratio: float
    quantile: float = Field(description="quantile of the reference's terms that sets their "
                            "levels")
    plan_bound: float = Field(description="the plan's mean of per-agent scaled bounds")
    reference_bound: float = Field(description="the same mean for the reference")
    volatility_s: float = Field(0.0, description="the plan's mean Vol_ext in seconds per "
                                "decision (the others' effect on its agents' cell times)")
    negligible: bool = Field(False, description="mean Vol_ext at most the config's negligible "
                             "level: accepted at the threshold (a tie) too")
    bounds: list[float]
    external_terms: list[float]
    divergence_terms: list[float]
    absolute_bounds: list[float] = Field(default_factory=list,
                                         description="c1 Vol_ext + c2 sum D_j per agent")
    offenders: list[AgentTerms]
    shared_edges: list[tuple[int, int, int]]  # (from OSM id, to OSM id, agents in conflict)
    plan_mean_return: float
    baseline_mean_return: float
    too_slow: bool = Field(description="mean return below the baseline minus the tolerance")
    mean_travel_time: float
    reason: str
    lookahead: bool = Field(False, description="the verdict is bound version 6's (the "
                            "lookahead's forecast drift); else the bound's")
    lookahead_drift_s: float | None = Field(None, description="version 6: the plan's mean "
                                            "predicted drift (s per decision) after the "
                                            "learners' whole next update with its "
                                            "demonstrations")
    reference_lookahead_drift_s: float | None = Field(None, description="version 6: the same "
                                                      "for the reference")
    bound_accepted: bool | None = Field(None, description="version 6: the version-5 verdict "
                                        "on the same terms (reported for comparison)")


def execute(net: CityNetwork, scenario: Scenario, policy_for: type[BatchPolicy] | None = None,
            routes: Sequence[Sequence[int]] | None = None,
            trajectories: bool = False, record_routes: bool = False) -> Execution:
    """Run ``routes`` (or ``ShortestPathPolicy`` when None) and record what the critic reads:
    every learner's decision rows (their observations alone are built each step:
    ``RoutingCore.observe(rows)``, equal to those rows of the full observation), the edges,
    returns, metrics and cell times; with ``trajectories`` also the dense per-step arrays of
    every learner (``Execution.traj``, full observations every step); with ``record_routes``
    the routes driven (``Execution.driven``, ``exact_replay``)."""
    core = RoutingCore(net, scenario, record_traversals=True, record_routes=record_routes)
    routes = [list(map(int, r)) for r in routes] if routes is not None else None
    policy = RoutePolicy(core, routes) if routes is not None \
        else (policy_for or ShortestPathPolicy)()
    full = core.reset()
    rows = np.flatnonzero(core.status == AT_NODE)
    obs = full if trajectories else full[rows]
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "mask", "reward", "done")}
    picked = DecisionRecorder(core.obs_dim, core.k)
    edges = np.empty((scenario.n_steps, core.n), dtype=np.int64)
    returns = np.zeros(core.n)
    while not core.done:
        mask = core.action_mask()
        actions = policy(core)
        on = np.where(core.status == ON_EDGE, core.edge, -1)
        slot = np.clip(actions, 0, core.k - 1)
        on[rows] = core.out_table[core.node[rows], slot[rows]]
        edges[core.t] = on
        if not trajectories:
            picked.add(core.t, rows, obs, mask, actions, returns)
        reward, term, trunc = core.advance(actions)
        returns += reward
        rows = np.flatnonzero(core.status == AT_NODE)
        if trajectories:
            for key, value in zip(buf, (obs, actions, mask, reward, term | trunc), strict=True):
                buf[key].append(value)
            obs = core.observe()
        else:
            obs = core.observe(rows)
    traj = Trajectories(**{k: np.stack(v) for k, v in buf.items()}) if trajectories else None
    decisions = DecisionRows.of(traj) if traj is not None else DecisionRows(
        **vars(picked.record(returns, core.t)))
    keys, times, mine = _cells(core)
    driven = core.agent_routes() if record_routes else None
    return Execution(keys, times, returns, core.metrics(), edges[:core.t], mine, decisions,
                     (net, scenario, policy_for, routes), traj, driven,
                     record_routes and _replays_exactly(core, driven))


def _replays_exactly(core: RoutingCore, driven: list[list[int]]) -> bool:
    """Whether ``RoutePolicy(driven)`` takes every decision of this finished run as it was
    taken: each edge entered is the one ``RoutePolicy`` takes from its start node to its end
    node (the cheapest parallel edge) and no route holds a node twice."""
    net = core.net
    if any(len(set(r)) != len(r) for r in driven):
        return False
    entered = np.unique(np.concatenate([e for _, e in core.routes])) if core.routes \
        else np.zeros(0, np.int64)
    return all(net.edge_between(int(net.edge_src[e]), int(net.edge_dst[e])) == e
               for e in entered.tolist())


_CACHE: dict[str, object] = {}


def _cached(key: str, make):
    """A small in-process memo (resimulations of one plan are reused across checks)."""
    if key not in _CACHE:
        if len(_CACHE) >= 64:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = make()
    return _CACHE[key]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _routes_key(net: CityNetwork, scenario: Scenario, kind: str) -> str:
    return _digest("routes", net.name, scenario.resolve(net).model_dump(mode="json"), kind)


def shortest_path_run(net: CityNetwork, scenario: Scenario) -> Execution:
    """The free-flow shortest-path policy's execution (the critic's baseline) with its routes,
    which :func:`policy_routes` then answers for ``shortest-path`` without another run (the
    same drive: the policy reads no observation)."""
    run = execute(net, scenario, record_routes=True)
    _cached(_routes_key(net, scenario, "shortest-path"),
            lambda: [list(map(int, r)) for r in run.driven])
    return run


def policy_routes(net: CityNetwork, scenario: Scenario, kind: str) -> list[list[int]]:
    """Node routes the learners drive under a reference policy (``shortest-path`` or
    ``congestion-aware``), background traffic as in the scenario."""
    def make() -> list[list[int]]:
        policy = CongestionAwarePolicy() if kind == "congestion-aware" else ShortestPathPolicy()
        core = RoutingCore(net, scenario, record_routes=True)
        drive(core, policy)  # no observations: the routes are all that is read
        return [list(map(int, r)) for r in core.agent_routes()]

    return _cached(_routes_key(net, scenario, kind), make)


def alternative_routes(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
                       kind: str) -> list[list[int]]:
    """Per agent the route it switches to when it changes behaviour: the ``kind`` policy's
    route, else the other reference policy's, else (both equal the plan route) the fastest
    free-flow route with the plan routes' edges three times slower (a second path)."""
    other = "shortest-path" if kind == "congestion-aware" else "congestion-aware"
    first, second = policy_routes(net, scenario, kind), policy_routes(net, scenario, other)
    out = [a if list(a) != list(r) else b for r, a, b in zip(routes, first, second,
                                                               strict=True)]
    same = [i for i, r in enumerate(routes) if list(out[i]) == list(r) and len(r) > 1]
    if same:
        from relied.env.equilibrium import fastest_routes

        cost = net.freeflow_s.copy()
        for i in same:
            r = routes[i]
            cost[[net.edge_between(u, v) for u, v in zip(r[:-1], r[1:], strict=True)]] *= 3.0
        fresh, _ = fastest_routes(net, cost[:, None], 1e12,
                                  np.array([routes[i][0] for i in same]),
                                  np.array([routes[i][-1] for i in same]), np.zeros(len(same)))
        for i, r in zip(same, fresh, strict=True):
            out[i] = r
    return out


def resimulate(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
               alternative: Sequence[Sequence[int]], change: np.ndarray, config: BoundConfig,
               rng: np.random.Generator) -> CellTimes:
    """One run in which the agents flagged in ``change`` drive their alternative route and
    depart up to ``jitter_s`` later; everyone else keeps the plan. Only its cell times are
    kept (no observation is built)."""
    deps = np.asarray(scenario.departures_s, dtype=float)
    shift = np.where(change, rng.uniform(0, config.jitter_s, deps.size), 0.0)
    deps = np.minimum(np.round(deps + shift, 1), scenario.horizon_s - scenario.dt_s)
    moved = scenario.model_copy(update={"departures_s": deps.tolist()})
    mixed = [list(alternative[i]) if change[i] else list(routes[i]) for i in range(len(routes))]
    core = RoutingCore(net, moved, record_traversals=True)
    drive(core, RoutePolicy(core, mixed))
    return _cell_times(core)


def cell_spread(runs: Sequence[CellTimes], cells: np.ndarray) -> np.ndarray:
    """Per cell of ``cells`` the std of its mean traversal time (s) over ``runs`` (those in
    which some vehicle entered it; 0 where fewer than two did)."""
    times = np.full((len(runs), cells.size), np.nan)
    for k, r in enumerate(runs):
        at = np.minimum(np.searchsorted(r.cell_keys, cells), max(r.cell_keys.size - 1, 0))
        hit = r.cell_keys[at] == cells if r.cell_keys.size else np.zeros(cells.size, bool)
        times[k, hit] = r.cell_times_s[at[hit]]
    seen = np.isfinite(times).sum(axis=0)
    mean = np.nansum(times, axis=0) / np.maximum(seen, 1)
    var = np.nansum((times - mean) ** 2, axis=0) / np.maximum(seen, 1)
    return np.where(seen >= 2, np.sqrt(var), 0.0)


def local_volatility(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
                     config: BoundConfig, groups: Sequence[Sequence[int]] | None = None,
                     base: Execution | None = None,
                     agents: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(Vol_ext, samples)`` per agent; ``Vol_ext`` in reward units per decision: the mean
    over the cells of its
    plan route (edge, entry minute) of the spread of the cell's travel time over the plan's
    execution and the resimulations in which only agents outside ``G(i)`` changed behaviour
    (module docstring), over ``time_scale_s``; ``samples``: how many runs that is (1: no
    outsider ever moved, nothing measured). ``groups=None`` means ``G(i) = {i}``;
    ``agents``: only these get top-up resimulations."""
    scenario = scenario.resolve(net)
    n = scenario.n_agents
    groups = [list(g) for g in groups] if groups is not None else [[i] for i in range(n)]
    key = _digest("vol", net.name, scenario.model_dump(mode="json"),
                  [list(map(int, r)) for r in routes], groups,
                  config.model_dump(include={"executions", "switch_share", "alternative",
                                             "jitter_s", "min_runs", "seed"}),
                  None if agents is None else sorted(map(int, agents)))
    topped = range(n) if agents is None else sorted({int(a) for a in agents})

    def make() -> tuple[np.ndarray, np.ndarray]:
        alt = alternative_routes(net, scenario, routes, config.alternative)
        plan = base if base is not None else execute(net, scenario, routes=routes)
        runs: list[CellTimes] = [plan]
        samples: list[list[int]] = [[0] for _ in range(n)]
        member = [np.asarray(g, dtype=np.int64) for g in groups]
        rng = np.random.default_rng([config.seed, 7])
        held_cap = max(n // 2, max(len(g) for g in groups))

        def run(held: np.ndarray) -> None:
            change = (rng.random(n) < config.switch_share) & ~held
            if not change.any():
                return
            runs.append(resimulate(net, scenario, routes, alt, change, config, rng))
            for i in range(n):
                if not change[member[i]].any():
                    samples[i].append(len(runs) - 1)

        for _ in range(config.executions):
            run(np.zeros(n, dtype=bool))
        for _ in range(2 * config.executions):
            lacking = [i for i in topped if len(samples[i]) < config.min_runs]
            if not lacking:
                break
            held = np.zeros(n, dtype=bool)
            for i in lacking:
                if held.sum() + len(member[i]) > held_cap and held.any():
                    continue
                held[member[i]] = True
            run(held)
        cells = plan.agent_cells
        vol = np.array([float(cell_spread([runs[k] for k in samples[i]], cells[i]).mean())
                        if cells[i].size else 0.0 for i in range(n)]) / scenario.time_scale_s
        return vol, np.array([len(x) for x in samples])

    return _cached(key, make)


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


@dataclass
class BoundTerms:
    """Per-agent terms of one plan: scaled ``bound``, ``external`` and ``divergence`` terms
    (:func:`relied.experts.bound.scaled_bound`), ``absolute`` (the bound in return units),
    the reference levels ``scales``, ``groups``, the plan's ``run``, ``volatility``
    (``Vol_ext``, reward units per decision), its ``samples`` per agent, ``move``
    (:func:`successor_move`, reward units per decision; 0 without a trial update) and
    ``lookahead`` (:func:`lookahead_drift`, version 6; else None)."""

    bound: np.ndarray
    external: np.ndarray
    divergence: np.ndarray
    groups: list[list[int]]
    run: Execution
    absolute: np.ndarray
    scales: tuple[float, float]
    volatility: np.ndarray
    samples: np.ndarray
    move: np.ndarray
    lookahead: np.ndarray | None = None


class GreedyProbs:
    """The greedy policy (most likely valid action) of ``policy_probs`` over a
    :class:`RoutingCore`: the learners' behaviour as training evaluates it."""

    def __init__(self, policy_probs: PolicyProbs):
        self.policy_probs = policy_probs

    def __call__(self, core: RoutingCore) -> np.ndarray:
        mask = core.action_mask()
        deciding = np.flatnonzero(mask[:, : core.k].any(axis=1))
        actions = np.full(core.n, core.noop, dtype=np.int64)
        if deciding.size:
            probs = self.policy_probs(core.observe(deciding), mask[deciding], deciding)
            actions[deciding] = np.argmax(np.where(mask[deciding], probs, -1.0), axis=1)
        return actions


#: cell times of greedy runs by (scenario, policy): the callable is kept, so its identity
#: cannot be reused by another while its entry lives (a policy must not change during a check)
_GREEDY: dict[str, tuple[PolicyProbs, CellTimes]] = {}


def greedy_cell_times(net: CityNetwork, scenario: Scenario,
                      policy_probs: PolicyProbs) -> CellTimes:
    """Cell times (:class:`CellTimes`) of one run of the learners' greedy policy."""
    key = _digest("greedy", net.name, scenario.model_dump(mode="json"), id(policy_probs))
    hit = _GREEDY.get(key)
    if hit is not None and hit[0] is policy_probs:
        return hit[1]
    core = RoutingCore(net, scenario, record_traversals=True)
    drive(core, GreedyProbs(policy_probs))
    if len(_GREEDY) >= 8:
        _GREEDY.pop(next(iter(_GREEDY)))
    _GREEDY[key] = (policy_probs, _cell_times(core))
    return _GREEDY[key][1]


def _times_on(run: CellTimes, cells: np.ndarray, freeflow_s: np.ndarray,
              bins: int) -> np.ndarray:
    """Travel time of ``cells`` in ``run`` (the edge's free-flow time where nobody entered)."""
    if not run.cell_keys.size:
        return freeflow_s[cells // bins]
    at = np.minimum(np.searchsorted(run.cell_keys, cells), run.cell_keys.size - 1)
    return np.where(run.cell_keys[at] == cells, run.cell_times_s[at], freeflow_s[cells // bins])


def successor_move(net: CityNetwork, scenario: Scenario, run: Execution,
                   policy_probs: PolicyProbs, successor: PolicyProbs) -> np.ndarray:
    """Per agent, how far its local environment moves when the learners take the step the plan
    causes: the mean over the cells of its plan route of ``|t_succ - t_now|``, the cell's
    travel time when the learners drive the greedy ``successor`` (their trial update on the
    plan) against their greedy current policy, in reward units per decision (free-flow time
    where nobody entered a cell)."""
    bins = int(scenario.horizon_s // CELL_S) + 2
    now = greedy_cell_times(net, scenario, policy_probs)
    then = greedy_cell_times(net, scenario, successor)
    return np.array([float(np.abs(_times_on(then, c, net.freeflow_s, bins)
                                  - _times_on(now, c, net.freeflow_s, bins)).mean())
                     if c.size else 0.0 for c in run.agent_cells]) / scenario.time_scale_s


#: reference levels by (scenario, settings, reference mean): what ``reference_bound``
#: measured, so a check given only the reference's mean scales its terms alike
_SCALES: dict[str, tuple[float, float]] = {}
#: version 6: the reference's mean predicted drift under the same key
_AHEAD: dict[str, float] = {}


def _scales_key(net: CityNetwork, scenario: Scenario, config: BoundConfig,
                reference: float) -> str:
    return _digest("scales", net.name, scenario.model_dump(mode="json"),
                   config.model_dump(mode="json"), round(float(reference), 9))


def _raw_terms(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
               config: BoundConfig, policy_probs: PolicyProbs | None,
               previous_probs: PolicyProbs | None,
               planner_groups: Sequence[Sequence[int]] | None, run: Execution | None,
               agents: Sequence[int] | None = None, trial_update: TrialUpdate | None = None):
    """Unscaled terms. With ``trial_update`` (version 5) ``D_j`` is the TV between the current
    policy and its trial update on the plan's demonstrations, and the external term measures
    ``Vol_ext`` plus :func:`successor_move`; without it, version 4's terms. With
    ``config.version`` 6 also each agent's predicted drift (:func:`lookahead_drift`; else
    None)."""
    run = run or execute(net, scenario, routes=routes)
    groups = interaction_groups(run.edges_by_step, config.group, planner_groups)
    n = scenario.n_agents
    if trial_update is None:
        to_plan, step = run.decisions.divergence(n, policy_probs, previous_probs,
                                                 config.divergence)
        divergence, move = to_plan + step, np.zeros(n)
    else:
        if policy_probs is None:
            raise ValueError("a trial update needs the learners' current policy_probs")
        successor = trial_update(run.decisions, None if agents is None
                                 else sorted(int(a) for a in agents))
        divergence = run.decisions.divergence(n, policy_probs, successor, config.divergence)[1]
        move = successor_move(net, scenario, run, policy_probs, successor)
    vol, samples = local_volatility(net, scenario, routes, config, groups, run, agents)
    absolute, ext, dterm = stationarity_bound(vol + move, divergence, groups, config.gamma,
                                              scenario.reward_bound)
    ahead = lookahead_drift(net, scenario, run, config, policy_probs, trial_update, agents) \
        if config.version >= LOOKAHEAD_VERSION and trial_update is not None else None
    return absolute, ext, dterm, groups, run, (vol, samples, move, ahead)


def lookahead_drift(net: CityNetwork, scenario: Scenario, run: Execution, config: BoundConfig,
                    policy_probs: PolicyProbs | None, update: TrialUpdate | None,
                    agents: Sequence[int] | None = None) -> np.ndarray:
    """Bound version 6: per agent the drift of its local environment that the learners' whole
    next update with the plan's demonstrations (``update.lookahead``, seeded by the critic's
    ``config.seed``) is forecast to cause: :func:`successor_move` with the lookahead's
    successor (reward units per decision)."""
    if policy_probs is None or not isinstance(update, Lookahead):
        raise ValueError("bound version 6 needs the learners: their current policy_probs and "
                         "an update with a lookahead (relied.rl.trial.trial_update)")
    ahead = update.lookahead(scenario, run.decisions,
                             None if agents is None else sorted(int(a) for a in agents),
                             config.seed)
    return successor_move(net, scenario, run, policy_probs, ahead)


def plan_bounds(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
                config: BoundConfig, policy_probs: PolicyProbs | None = None,
                previous_probs: PolicyProbs | None = None,
                planner_groups: Sequence[Sequence[int]] | None = None,
                run: Execution | None = None, scales: tuple[float, float] | None = None,
                reference_routes: Sequence[Sequence[int]] | None = None,
                agents: Sequence[int] | None = None,
                trial_update: TrialUpdate | None = None) -> BoundTerms:
    """Every agent's bound for ``routes`` under the learners' current (and previous) policy,
    or with ``trial_update`` (version 5) their trial update on the plan.

    The terms are scaled by ``scales`` (the reference's levels, :func:`reference_scales`);
    when not given they are measured on ``reference_routes`` (default: free-flow shortest
    paths) under the same policies."""
    scenario = scenario.resolve(net)
    absolute, ext, dterm, groups, run, vol = _raw_terms(
        net, scenario, routes, config, policy_probs, previous_probs, planner_groups, run, agents,
        trial_update)
    if scales is None:
        scales = reference_scales(net, scenario, config, policy_probs, previous_probs,
                                  reference_routes, planner_groups, agents, trial_update)[0]
    bound, sext, sdiv = scaled_bound(ext, dterm, scales)
    return BoundTerms(bound, sext, sdiv, groups, run, absolute, scales, *vol)


def reference_scales(net: CityNetwork, scenario: Scenario, config: BoundConfig,
                     policy_probs: PolicyProbs | None = None,
                     previous_probs: PolicyProbs | None = None,
                     routes: Sequence[Sequence[int]] | None = None,
                     planner_groups: Sequence[Sequence[int]] | None = None,
                     agents: Sequence[int] | None = None,
                     trial_update: TrialUpdate | None = None,
                     run: Execution | None = None,
                     ) -> tuple[tuple[float, float], float]:
    """``(term levels, mean scaled bound)`` of the learners' current joint behaviour:
    ``routes`` (their recent routes) or, when unknown, the free-flow shortest paths; the
    mean is over ``agents`` when given. With ``trial_update`` the reference's terms are
    measured as a plan's are (its trial update on the reference's demonstrations). ``run``:
    an execution of the free-flow shortest paths (:func:`shortest_path_run`), reused when
    ``routes`` is not given and it replays exactly (``Execution.exact_replay``)."""
    scenario = scenario.resolve(net)
    if routes is not None or run is None or not run.exact_replay:
        run = None
    routes = routes if routes is not None else policy_routes(net, scenario, "shortest-path")
    _, ext, dterm, _, _, extra = _raw_terms(net, scenario, routes, config, policy_probs,
                                         previous_probs, planner_groups, run, agents,
                                         trial_update)
    pick = slice(None) if agents is None else np.asarray(sorted(agents), dtype=np.int64)
    scales = term_scales(ext[pick], dterm[pick], config.quantile, config.gamma,
                         scenario.reward_bound)
    reference = threshold(scaled_bound(ext, dterm, scales)[0][pick], config)[0]
    if len(_SCALES) >= 256:
        _SCALES.pop(next(iter(_SCALES)))
    key = _scales_key(net, scenario, config, reference)
    _SCALES[key] = scales
    if extra[3] is not None:
        if len(_AHEAD) >= 256:
            _AHEAD.pop(next(iter(_AHEAD)))
        _AHEAD[key] = float(extra[3][pick].mean())
    return scales, reference


def reference_bound(net: CityNetwork, scenario: Scenario, config: BoundConfig,
                    policy_probs: PolicyProbs | None = None,
                    previous_probs: PolicyProbs | None = None,
                    routes: Sequence[Sequence[int]] | None = None,
                    planner_groups: Sequence[Sequence[int]] | None = None,
                    agents: Sequence[int] | None = None,
                    trial_update: TrialUpdate | None = None,
                    run: Execution | None = None) -> float:
    """The mean of the scaled per-agent bounds of the learners' current joint
    behaviour (:func:`reference_scales`, ``run`` as there); a later :func:`check_plan` given
    this value as ``reference`` scales its terms by the same levels."""
    return reference_scales(net, scenario, config, policy_probs, previous_probs, routes,
                            planner_groups, agents, trial_update, run)[1]


def check_plan(net: CityNetwork, scenario: Scenario, routes: Sequence[Sequence[int]],
               config: BoundConfig, policy_probs: PolicyProbs | None = None,
               planner_groups: Sequence[Sequence[int]] | None = None,
               baseline_return: float | None = None,
               previous_probs: PolicyProbs | None = None,
               reference: float | None = None,
               reference_routes: Sequence[Sequence[int]] | None = None,
               scales: tuple[float, float] | None = None,
               agents: Sequence[int] | None = None,
               trial_update: TrialUpdate | None = None,
               ) -> tuple[StationarityReport, Execution]:
    """Evaluate a joint plan (node indices per agent); returns the report and its execution.

    ``reference``: the reference's mean scaled bound when already known (from
    :func:`reference_bound`, whose term levels are reused); otherwise it is computed for
    ``reference_routes`` (default: free-flow shortest paths). ``scales`` with ``reference``:
    fixed term levels (:func:`recheck_batch`). ``agents``: judge only these agents (the
    means and offenders are theirs; module docstring). ``trial_update``: the learners' trial
    update (bound version 5; with ``policy_probs``), for the plan and the reference alike.
    With ``config.version`` 6 the verdict is the lookahead's (:func:`lookahead_drift`: the
    plan's mean predicted drift strictly below ``epsilon`` times the reference's, or within
    :data:`~relied.experts.bound.TIE_TOLERANCE` of it when ``negligible``; the return
    criterion as before); the v5 terms, bounds and verdict (``bound_accepted``) are reported
    beside it."""
    scenario = scenario.resolve(net)
    # without the learners' update, version 6 judges by version 4's stand-in (as 5 does)
    lookahead = config.version >= LOOKAHEAD_VERSION and trial_update is not None
    if scales is None or reference is None:
        scales = _SCALES.get(_scales_key(net, scenario, config, reference)) \
            if reference is not None else None
    if scales is None:
        scales, measured = reference_scales(net, scenario, config, policy_probs,
                                            previous_probs, reference_routes, planner_groups,
                                            agents, trial_update)
        reference = measured if reference is None else reference
    ahead_ref = _AHEAD.get(_scales_key(net, scenario, config, reference)) if lookahead else None
    if lookahead and ahead_ref is None:
        reference_scales(net, scenario, config, policy_probs, previous_probs, reference_routes,
                         planner_groups, agents, trial_update)
        ahead_ref = _AHEAD[next(reversed(_AHEAD))]
    terms = plan_bounds(net, scenario, routes, config, policy_probs, previous_probs,
                        planner_groups, scales=scales, agents=agents, trial_update=trial_update)
    bound, ext, dterm, groups, run = (terms.bound, terms.external, terms.divergence,
                                      terms.groups, terms.run)
    eps = config.epsilon * reference
    judged = np.arange(bound.size) if agents is None else np.asarray(sorted(agents), dtype=np.int64)
    plan_mean = float(bound[judged].mean())
    vol = float((terms.volatility + terms.move)[judged].mean())
    quiet = vol <= config.negligible and bool((terms.samples[judged] >= 2).all())
    if baseline_return is None:
        baseline_return = float(execute(net, scenario).returns.mean())
    plan_return = float(run.returns.mean())
    unstable = not (plan_mean < eps or (quiet and plan_mean <= eps * (1 + TIE_TOLERANCE)))
    bad = judged[bound[judged] > eps]
    bad = bad[np.argsort(-bound[bad], kind="stable")]
    if lookahead:
        ahead = terms.lookahead
        ahead_mean = float(ahead[judged].mean())
        limit = config.epsilon * ahead_ref
        ahead_quiet = ahead_mean <= config.negligible
        bound_unstable = unstable
        unstable = not (ahead_mean < limit
                        or (ahead_quiet and ahead_mean <= limit * (1 + TIE_TOLERANCE)))
        bad = judged[ahead[judged] > limit]
        bad = bad[np.argsort(-ahead[bad], kind="stable")]
    offenders = [AgentTerms(agent_id=int(i), bound=float(bound[i]), external_term=float(ext[i]),
                            divergence_term=float(dterm[i]), group_size=len(groups[i]))
                 for i in bad]
    conflict = sorted({j for i in bad for j in groups[i]})
    shared = _shared_edges(net, run.edges_by_step, conflict) if bad.size else []
    short = plan_return < baseline_return - config.return_tolerance
    reasons = []
    if unstable and lookahead:
        s_ = scenario.time_scale_s
        worst = (f"; {bad.size} agents above it (worst: agent {int(bad[0])}, "
                 f"{ahead[bad[0]] * s_:.3f} s, shares edges with {len(groups[bad[0]]) - 1} "
                 "agents); spread the listed agents over other streets or away from the shared "
                 "edges" if bad.size else "")
        reasons.append(
            f"the learners' next update with this plan's demonstrations is forecast to move "
            f"its agents' travel times by {ahead_mean * s_:.3f} s per decision, not below "
            f"{config.epsilon:g} x the reference's {ahead_ref * s_:.3f} s: the plan does not "
            f"lower their non-stationarity{worst}")
    elif unstable:
        worst = (f"; {bad.size} agents exceed epsilon (worst: agent {int(bad[0])}, bound "
                 f"{bound[bad[0]]:.1f}, shares edges with {len(groups[bad[0]]) - 1} agents); "
                 "spread the listed agents over other streets or away from the shared edges"
                 if bad.size else "; move agents off the busiest streets")
        reasons.append(
            f"the mean of the agents' bounds, {plan_mean:.1f}, is not below epsilon={eps:.1f} "
            f"({config.epsilon:g} x the learners' current behaviour, {reference:.1f}): the "
            f"plan does not lower their non-stationarity{worst}")
    if short:
        reasons.append(f"mean return {plan_return:.3f} is below the free-flow shortest-path "
                       f"baseline {baseline_return:.3f}; use faster routes")
    report = StationarityReport(
        accepted=not reasons, epsilon=eps, threshold_ratio=config.epsilon,
        quantile=config.quantile, plan_bound=plan_mean, reference_bound=float(reference),
        volatility_s=vol * scenario.time_scale_s, negligible=quiet,
        bounds=bound.round(3).tolist(), external_terms=ext.round(4).tolist(),
        divergence_terms=dterm.round(3).tolist(),
        absolute_bounds=terms.absolute.round(3).tolist(),
        offenders=offenders if unstable else [], shared_edges=shared if unstable else [],
        plan_mean_return=plan_return, baseline_mean_return=baseline_return, too_slow=short,
        mean_travel_time=run.metrics["mean_travel_time"],
        reason="; ".join(reasons) or (
            _lookahead_reason(ahead_mean, config.epsilon, ahead_ref, scenario.time_scale_s)
            if lookahead
            else _accepted_reason(plan_mean, eps, vol * scenario.time_scale_s)),
        **({"lookahead": True,
            "lookahead_drift_s": ahead_mean * scenario.time_scale_s,
            "reference_lookahead_drift_s": ahead_ref * scenario.time_scale_s,
            "bound_accepted": not (bound_unstable or short)} if lookahead else {}))
    return report, run


def _lookahead_reason(ahead: float, epsilon: float, reference: float,
                      time_scale_s: float) -> str:
    how = "below" if ahead < epsilon * reference else "at (negligible)"
    return (f"the learners' next update with this plan's demonstrations is forecast to move "
            f"its agents' travel times by {ahead * time_scale_s:.3f} s per decision, {how} "
            f"{epsilon:g} x the reference's {reference * time_scale_s:.3f} s, and the mean "
            "return is not below the shortest-path baseline")


def _accepted_reason(plan_mean: float, eps: float, vol_s: float) -> str:
    why = (f"the mean of the agents' bounds ({plan_mean:.1f}) is below epsilon={eps:.1f}"
           if plan_mean < eps else f"the mean of the agents' bounds ({plan_mean:.1f}) is at "
           f"epsilon={eps:.1f} and the others move this plan's travel times by {vol_s:.4f} s "
           "per decision on average (negligible: nothing to lower)")
    return why + " and the mean return is not below the shortest-path baseline"


def recheck_batch(path: Path, learners: Learners | None = None,
                  config: BoundConfig | None = None,
                  gamma: float | None = None,
                  net: CityNetwork | None = None) -> StationarityReport:
    """Recompute a stored batch's bound under the learners' current policies (during
    training): ``learners`` (:class:`~relied.experts.learners.Learners`; default untrained)
    gives their current policy, the previous one and their trial update. ``net``: the batch's
    city, loaded (default: loaded by the scenario's city name).

    ``config`` defaults to the bound settings stored with the batch (version-1 settings are
    upgraded, :meth:`BoundConfig.from_stored`), ``gamma`` is the learners' discount. Without a
    trial update the terms are scaled by the levels the batch was first judged against
    (free-flow shortest paths, untrained learners, the stored settings), so a re-check shows
    how the batch's non-stationarity moved as the learners changed, in fixed units. With one
    (bound version 5) the reference is judged as the plan is, by the same learners and their
    trial update on the reference's demonstrations: a trial step only exists for learners, so
    the re-check is the critic's rule applied now (the plan against the free-flow shortest
    paths under today's learners). A batch of a sample (``demo_agents``) is judged on its
    sampled agents. A batch made on a fleet sample (``DemoMeta.fleet_sample``) is judged on
    that sample, as the team judged it: the per-agent lists of the report follow the sample's
    learners (``fleet_sample.learners``), its offenders carry fleet agent ids; under bound
    version 6 the lookahead's rollout runs on the sample too (:meth:`Learners.on_sample`).
    """
    learners = learners or Learners()
    _, meta = load_batch(path)
    if net is None:
        from relied.env.cities import load_city

        net = load_city(meta.scenario.city)
    scenario, agents = meta.scenario, meta.demo_agents
    routes = [index_of(net, r).tolist() for r in meta.routes]
    sample = (FleetSample.of(net, scenario, meta.fleet_sample) if meta.fleet_sample
              else None)
    if sample is not None:
        learners = learners.on_sample(sample, scenario.resolve(net).n_agents)
        net, scenario, routes = sample.net, sample.scenario, sample.routes(routes)
        agents = sample.positions(agents) if agents is not None else None
    config = config or BoundConfig.from_stored(meta.extra.get("bound"))
    trial = learners.trial_update
    base = shortest_path_run(net, scenario)  # the baseline, and the reference's execution
    scales, reference = reference_scales(
        net, scenario, config, *((learners.policy_probs, learners.previous_probs)
                                 if trial is not None else (None, None)),
        agents=agents, trial_update=trial, run=base)
    if gamma is not None:
        config = config.model_copy(update={"gamma": gamma})
    report = check_plan(net, scenario, routes, config, learners.policy_probs,
                        baseline_return=float(base.returns.mean()),
                        previous_probs=learners.previous_probs, reference=reference,
                        scales=scales, agents=agents, trial_update=trial)[0]
    if sample is None:
        return report
    fleet = sample.learners
    return report.model_copy(update={"offenders": [
        o.model_copy(update={"agent_id": int(fleet[o.agent_id])}) for o in report.offenders]})
