"""Batched, time-stepped mesoscopic traffic simulator: all agents advance in numpy at once.

Each agent is waiting to depart, at a node (a decision point), on an edge, or arrived. Every
step of ``dt_s`` seconds:

1. agents at a node enter the out-edge they chose (action = slot in the node's out-edge list,
   ``K`` = max out-degree; slot ``K`` is the no-op of agents not at a decision point);
2. every edge's travel time is recomputed from its occupancy,
   ``t = t0 * min(1 + alpha * (others / cap) ** beta, max_slowdown)`` (BPR; ``others`` = vehicles
   on the edge besides one, so a lone vehicle drives at free flow), so agents congest each other;
3. agents on edges advance by ``budget / t`` of the edge; those that reach its end are at the
   next node (or arrived, at their destination). Time left in the step carries into the next
   edge, so travel times are continuous, not rounded to steps (an agent crosses at most one
   edge per step; on a run of edges shorter than a step its clock lags the simulation clock
   until its next longer edge absorbs the carry).

Observation (``obs_dim = 4 + 5 K``, bounded in ``[-1, 10]``): ``[at_decision, elapsed/horizon,
free-flow time to go (10 min units), straight distance to go (km)]`` then per out-edge slot of
the next decision node ``[valid, detour vs. free-flow shortest path (min), occupancy/capacity,
free-flow time of the edge (min), cos(angle to destination)]``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra

from relied.env.network import CityNetwork
from relied.env.scenario import Scenario, index_of

WAITING, AT_NODE, ON_EDGE, ARRIVED = 0, 1, 2, 3
GLOBAL_FEATURES, SLOT_FEATURES = 4, 5
OBS_LOW, OBS_HIGH = -1.0, 10.0


class InvalidActionError(ValueError):
    """An agent at a decision point chose a slot with no out-edge."""


def cost_to_go(net: CityNetwork, targets: np.ndarray, weight: np.ndarray | None = None):
    """``(len(targets), n_nodes)`` cheapest cost from every node to each target."""
    reverse = net.sparse(weight).T.tocsr()
    return dijkstra(reverse, indices=np.asarray(targets))


def _local_xy(net: CityNetwork) -> np.ndarray:
    lat0 = np.deg2rad(net.lat.mean())
    x = np.deg2rad(net.lon - net.lon.mean()) * 6_371_000 * np.cos(lat0)
    y = np.deg2rad(net.lat - net.lat.mean()) * 6_371_000
    return np.stack([x, y], axis=1)


class RoutingCore:
    """The simulator. ``reset()`` then ``step(actions)`` with one action per agent."""

    def __init__(self, net: CityNetwork, scenario: Scenario, record_routes: bool = False):
        self.net = net
        self.scenario = scenario.resolve(net)
        s = self.scenario
        self.n = s.n_agents
        self.k = net.max_out_degree
        self.noop = self.k
        self.obs_dim = GLOBAL_FEATURES + SLOT_FEATURES * self.k
        self.out_table = net.out_edge_table()
        self.origin = index_of(net, s.origins)
        self.dest = index_of(net, s.destinations)
        self.depart_s = np.asarray(s.departures_s, dtype=np.float64)
        self.dest_ids, self.dest_row = np.unique(self.dest, return_inverse=True)
        self.ff_to_dest = cost_to_go(net, self.dest_ids).astype(np.float64)
        self.ff_od = self.ff_to_dest[self.dest_row, self.origin]
        xy = _local_xy(net)
        self.xy = xy
        vec = xy[net.edge_dst] - xy[net.edge_src]
        self.edge_dir = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        self.record_routes = record_routes
        self.rows = np.arange(self.n)
        self.reset()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        self.t = 0
        self.status = np.full(self.n, WAITING, dtype=np.int8)
        self.node = self.origin.copy()
        self.edge = np.full(self.n, -1, dtype=np.int64)
        self.remaining = np.zeros(self.n)
        self.carry = np.zeros(self.n)
        self.arrival_s = np.full(self.n, np.nan)
        self.occupancy = np.zeros(self.net.n_edges, dtype=np.int64)
        self.entries = np.zeros(self.net.n_edges, dtype=np.int64)
        self.slowdown_sum = np.zeros(self.net.n_edges)
        self.agent_steps_on = np.zeros(self.net.n_edges, dtype=np.int64)
        self.routes: list[tuple[np.ndarray, np.ndarray]] = []
        self._depart(0.0)
        return self.observe()

    @property
    def time_s(self) -> float:
        return self.t * self.scenario.dt_s

    @property
    def done(self) -> bool:
        return self.t >= self.scenario.n_steps or bool((self.status == ARRIVED).all())

    def _depart(self, now: float) -> None:
        go = (self.status == WAITING) & (self.depart_s <= now + 1e-9)
        self.status[go] = AT_NODE
        self.carry[go] = np.minimum(now - self.depart_s[go], self.scenario.dt_s)

    def edge_travel_time(self, occupancy: np.ndarray | None = None) -> np.ndarray:
        """Current travel time of every edge from its occupancy (BPR)."""
        occ = self.occupancy if occupancy is None else occupancy
        s = self.scenario
        others = np.maximum(occ - 1, 0)
        factor = 1.0 + s.bpr_alpha * (others / self.net.capacity) ** s.bpr_beta
        return self.net.freeflow_s * np.minimum(factor, s.max_slowdown)

    def action_mask(self) -> np.ndarray:
        """``(n, K+1)`` bool: valid out-edge slots at decision points, else only the no-op."""
        mask = np.zeros((self.n, self.k + 1), dtype=bool)
        deciding = self.status == AT_NODE
        mask[deciding, : self.k] = self.out_table[self.node[deciding]] >= 0
        mask[~deciding, self.k] = True
        return mask

    # ---- dynamics ---------------------------------------------------------------------------
    def step(self, actions: np.ndarray):
        """Advance one step. Returns ``(obs, reward, terminated, truncated)``, arrays of n."""
        s, net = self.scenario, self.net
        dt = s.dt_s
        t0 = self.time_s
        actions = np.asarray(actions, dtype=np.int64)
        deciding = np.flatnonzero(self.status == AT_NODE)
        a = actions[deciding]
        chosen = self.out_table[self.node[deciding], np.clip(a, 0, self.k - 1)]
        bad = (a < 0) | (a >= self.k) | (chosen < 0)
        if bad.any():
            i = int(deciding[bad][0])
            raise InvalidActionError(f"agent {i} at node {int(self.node[i])} chose slot "
                                     f"{int(actions[i])}, which is masked; use action_mask()")
        self.status[deciding] = ON_EDGE
        self.edge[deciding] = chosen
        self.remaining[deciding] = 1.0
        self.entries += np.bincount(chosen, minlength=net.n_edges)
        if self.record_routes:
            self.routes.append((deciding, chosen))

        moving = np.flatnonzero(self.status == ON_EDGE)
        self.occupancy = np.bincount(self.edge[moving], minlength=net.n_edges)
        tt = self.edge_travel_time()
        e = self.edge[moving]
        self.slowdown_sum += self.occupancy * (tt / net.freeflow_s)
        self.agent_steps_on += self.occupancy
        budget = dt + self.carry[moving]
        self.carry[moving] = 0.0
        need = self.remaining[moving] * tt[e]
        reach = need <= budget
        self.remaining[moving] = np.where(reach, 0.0, self.remaining[moving] - budget / tt[e])
        done_edge = moving[reach]
        left = (budget - need)[reach]
        head = net.edge_dst[e[reach]]
        self.node[done_edge] = head
        self.edge[done_edge] = -1
        arrive = head == self.dest[done_edge]
        arrived_now = done_edge[arrive]
        self.status[arrived_now] = ARRIVED
        self.arrival_s[arrived_now] = t0 + dt - left[arrive]
        onward = done_edge[~arrive]
        self.status[onward] = AT_NODE
        self.carry[onward] = left[~arrive]

        reward = np.zeros(self.n)
        reward[moving] = -dt / s.time_scale_s
        reward[arrived_now] = (-np.clip(dt - left[arrive], 0.0, dt) / s.time_scale_s
                               + s.arrival_bonus)
        terminated = np.zeros(self.n, dtype=bool)
        terminated[arrived_now] = True
        self.t += 1
        self.occupancy = np.bincount(self.edge[self.status == ON_EDGE], minlength=net.n_edges)
        self._depart(self.time_s)
        truncated = np.zeros(self.n, dtype=bool)
        if self.t >= s.n_steps:
            late = self.status != ARRIVED
            truncated[late] = True
            reward[late] -= s.timeout_penalty
        return self.observe(), reward, terminated, truncated

    # ---- observation ------------------------------------------------------------------------
    def decision_node(self) -> np.ndarray:
        """The node where each agent decides next (its edge's head while on an edge)."""
        on_edge = self.status == ON_EDGE
        return np.where(on_edge, self.net.edge_dst[np.maximum(self.edge, 0)], self.node)

    def observe(self) -> np.ndarray:
        net, s = self.net, self.scenario
        node = self.decision_node()
        slots = self.out_table[node]
        valid = slots >= 0
        se = np.where(valid, slots, 0)
        togo = self.ff_to_dest[self.dest_row, node]
        via = net.freeflow_s[se] + self.ff_to_dest[self.dest_row[:, None], net.edge_dst[se]]
        detour = (via - togo[:, None]) / 60.0
        to_dest = self.xy[self.dest] - self.xy[node]
        dist = np.linalg.norm(to_dest, axis=1)
        unit = to_dest / np.maximum(dist, 1e-9)[:, None]
        cos = np.einsum("nkd,nd->nk", self.edge_dir[se], unit)
        obs = np.empty((self.n, self.obs_dim), dtype=np.float32)
        obs[:, 0] = self.status == AT_NODE
        obs[:, 1] = min(self.time_s / s.horizon_s, 1.0)
        obs[:, 2] = togo / 600.0
        obs[:, 3] = dist / 1000.0
        per = obs[:, GLOBAL_FEATURES:].reshape(self.n, self.k, SLOT_FEATURES)
        per[:, :, 0] = valid
        per[:, :, 1] = detour
        per[:, :, 2] = self.occupancy[se] / net.capacity[se]
        per[:, :, 3] = net.freeflow_s[se] / 60.0
        per[:, :, 4] = cos
        per[~valid] = 0.0
        arrived = self.status == ARRIVED
        obs[arrived, 1:] = 0.0
        np.clip(obs, OBS_LOW, OBS_HIGH, out=obs)
        return obs

    # ---- metrics ----------------------------------------------------------------------------
    def travel_times(self) -> np.ndarray:
        """Travel time per agent; agents not arrived are censored at the current time."""
        end = np.where(np.isnan(self.arrival_s), self.time_s, self.arrival_s)
        return np.maximum(end - self.depart_s, 0.0)

    def metrics(self) -> dict[str, float]:
        """Episode metrics. Travel times of agents not arrived count up to the horizon."""
        tt = self.travel_times()
        arrived = self.status == ARRIVED
        return {
            "mean_travel_time": float(tt.mean()),
            "p95_travel_time": float(np.percentile(tt, 95)),
            "mean_travel_time_arrived": (float(tt[arrived].mean()) if arrived.any()
                                         else float("nan")),
            "arrival_rate": float(arrived.mean()),
            "total_delay": float((tt - self.ff_od).sum()),
            "mean_freeflow_time": float(self.ff_od.mean()),
        }

    def edge_slowdown(self) -> np.ndarray:
        """Mean travel-time / free-flow ratio met on each edge this episode (NaN if unused)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.slowdown_sum / self.agent_steps_on

    def agent_routes(self) -> list[list[int]]:
        """Node sequence driven by each agent (needs ``record_routes=True``)."""
        routes = [[int(o)] for o in self.origin]
        for agents, edges in self.routes:
            for i, e in zip(agents.tolist(), edges.tolist(), strict=True):
                routes[i].append(int(self.net.edge_dst[e]))
        return routes
