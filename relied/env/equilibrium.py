"""Dynamic user equilibrium (DUE) of the learners' routes, by the method of successive averages.

Each iteration simulates the scenario with every learner on a fixed route (background traffic
behaves as always), measures the time-dependent travel time of every edge (mean experienced
traversal time of the vehicles that entered it in each ``bin_s`` window; free flow where none
did), finds each learner's fastest route on those times from its departure time (a vectorised
time-dependent label-correcting search), and moves each learner that would gain onto its
fastest route with probability ``1/(k+1)`` (seeded). The relative gap
``(sum experienced - sum fastest) / sum fastest`` measures how far from equilibrium the routes
are: at a DUE no learner can arrive earlier by changing route alone. This is the best a selfish
router can do, the figure learners are compared with.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from relied.env.core import RoutingCore
from relied.env.forecast import edge_times
from relied.env.network import CityNetwork
from relied.env.policies import RoutePolicy, ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario


class Equilibrium(BaseModel):
    """Routes (node indices) of the learners and the convergence record."""

    routes: list[list[int]]
    relative_gap: list[float]
    mean_travel_time: list[float]
    iterations: int


def fastest_routes(net: CityNetwork, times: np.ndarray, bin_s: float, origins: np.ndarray,
                   dests: np.ndarray, departs: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Fastest node route and arrival time of each trip on time-dependent edge ``times``
    (label-correcting search, all trips at once)."""
    n, m = origins.size, net.n_edges
    label = np.full((n, net.n_nodes), np.inf)
    label[np.arange(n), origins] = departs
    pred = np.full((n, net.n_nodes), -1, dtype=np.int64)
    by_dst = np.argsort(net.edge_dst, kind="stable")
    dst_sorted = net.edge_dst[by_dst]
    starts = np.flatnonzero(np.r_[True, dst_sorted[1:] != dst_sorted[:-1]])
    heads = dst_sorted[starts]
    group_of = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, m]))
    last_bin = times.shape[1] - 1
    for _ in range(net.n_nodes):
        at = label[:, net.edge_src]  # (n, m)
        finite = np.isfinite(at)
        b = np.minimum(np.where(finite, at, 0.0) // bin_s, last_bin).astype(np.int64)
        cand = at + times[np.arange(m), b]
        cand = cand[:, by_dst]
        best = np.minimum.reduceat(cand, starts, axis=1)
        better = best < label[:, heads] - 1e-9
        if not better.any():
            break
        rows, cols = np.nonzero(better)
        node = heads[cols]
        label[rows, node] = best[rows, cols]
        # the edge achieving each minimum: its position in the by-destination order
        position = np.where(cand == best[:, group_of], np.arange(m), -1)
        arg = np.maximum.reduceat(position, starts, axis=1)
        pred[rows, node] = by_dst[arg[rows, cols]]
    routes = []
    for i in range(n):
        node, route = int(dests[i]), [int(dests[i])]
        while node != origins[i]:
            e = int(pred[i, node])
            node = int(net.edge_src[e])
            route.append(node)
        routes.append(route[::-1])
    return routes, label[np.arange(n), dests]


def solve_equilibrium(net: CityNetwork, scenario: Scenario, iterations: int = 20,
                      bin_s: float = 60.0, tolerance: float = 0.01) -> Equilibrium:
    """Iterate route assignment and simulation until the relative gap is below ``tolerance``
    or ``iterations`` are done; returns the routes of the iteration with the smallest gap."""
    core = RoutingCore(net, scenario, record_routes=True, record_traversals=True)
    routes = run_episode(core, ShortestPathPolicy()).routes
    rng = np.random.default_rng([scenario.seed, 3])
    gaps: list[float] = []
    means: list[float] = []
    best: tuple[float, list[list[int]]] | None = None
    for k in range(1, iterations + 1):
        core = RoutingCore(net, scenario, record_routes=True, record_traversals=True)
        episode = run_episode(core, RoutePolicy(core, routes))
        driven = episode.routes
        times = edge_times(core, bin_s)
        fast, arrival = fastest_routes(net, times, bin_s, core.origin, core.dest, core.depart_s)
        experienced = core.travel_times()
        fastest = np.minimum(arrival - core.depart_s, experienced)
        gap = float((experienced.sum() - fastest.sum()) / max(fastest.sum(), 1e-9))
        gaps.append(gap)
        means.append(float(experienced.mean()))
        if best is None or gap < best[0]:
            best = (gap, driven)
        if gap <= tolerance:
            break
        # MSA: each learner that would gain moves to its fastest route with probability
        # 1/(k+1) (seeded), so the assignment averages instead of flipping back and forth
        gain = experienced - fastest
        movers = np.flatnonzero((gain > 1e-6) & (rng.random(core.n) < 1.0 / (k + 1)))
        routes = [list(r) for r in driven]
        for i in movers:
            routes[i] = fast[i]
    assert best is not None
    return Equilibrium(routes=best[1], relative_gap=gaps, mean_travel_time=means,
                       iterations=len(gaps))


class EquilibriumPolicy:
    """Drives the learners along dynamic-user-equilibrium routes, solved for the scenario of
    the first core it is called with (the solution is kept in ``equilibrium``)."""

    def __init__(self, iterations: int = 20, bin_s: float = 60.0, tolerance: float = 0.01):
        self.iterations, self.bin_s, self.tolerance = iterations, bin_s, tolerance
        self.equilibrium: Equilibrium | None = None
        self._follow: RoutePolicy | None = None
        self._scenario: Scenario | None = None

    def __call__(self, core: RoutingCore) -> np.ndarray:
        if self._follow is None or self._scenario != core.scenario:
            self.equilibrium = solve_equilibrium(core.net, core.scenario, self.iterations,
                                                 self.bin_s, self.tolerance)
            self._follow = RoutePolicy(core, self.equilibrium.routes)
            self._scenario = core.scenario
        return self._follow(core)
