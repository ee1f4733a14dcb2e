"""Reference policies over the batched core: each maps a :class:`RoutingCore` to actions.

* :class:`RandomPolicy`: uniform over valid out-edges (masked).
* :class:`ShortestPathPolicy`: free-flow shortest path to the destination.
* :class:`CongestionAwarePolicy`: shortest path on current travel times, re-planned every
  ``replan_every_s`` seconds.
* :class:`RoutePolicy`: follows given node routes (how expert plans are executed).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from relied.env.core import AT_NODE, RoutingCore, cost_to_go


class BatchPolicy(Protocol):
    def __call__(self, core: RoutingCore) -> np.ndarray: ...


def _greedy(core: RoutingCore, edge_cost: np.ndarray, to_go: np.ndarray, rows: np.ndarray):
    """For deciding agents pick the slot minimising ``edge_cost[e] + to_go[row, head(e)]``."""
    actions = np.full(core.n, core.noop, dtype=np.int64)
    deciding = np.flatnonzero(core.status == AT_NODE)
    if deciding.size == 0:
        return actions
    slots = core.out_table[core.node[deciding]]
    valid = slots >= 0
    se = np.where(valid, slots, 0)
    cost = edge_cost[se] + to_go[rows[deciding][:, None], core.net.edge_dst[se]]
    actions[deciding] = np.argmin(np.where(valid, cost, np.inf), axis=1)
    return actions


class RandomPolicy:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, core: RoutingCore) -> np.ndarray:
        mask = core.action_mask()
        return np.argmax(self.rng.random(mask.shape) * mask, axis=1)


class ShortestPathPolicy:
    def __call__(self, core: RoutingCore) -> np.ndarray:
        return _greedy(core, core.net.freeflow_s, core.ff_to_dest, core.dest_row)


class CongestionAwarePolicy:
    """Re-plans on current edge travel times every ``replan_every_s`` seconds."""

    def __init__(self, replan_every_s: float = 30.0):
        self.replan_every_s = replan_every_s
        self._planned_at: float | None = None
        self._to_go: np.ndarray | None = None

    def __call__(self, core: RoutingCore) -> np.ndarray:
        now = core.time_s
        if self._planned_at is None or now < self._planned_at or \
                now - self._planned_at >= self.replan_every_s:
            self._tt = core.edge_travel_time()
            self._to_go = cost_to_go(core.net, core.dest_ids, self._tt)
            self._planned_at = now
        return _greedy(core, self._tt, self._to_go, core.dest_row)


class RoutePolicy:
    """Drives each agent along its node route; off-route agents fall back to shortest path."""

    def __init__(self, core: RoutingCore, routes: list[list[int]]):
        if len(routes) != core.n:
            raise ValueError(f"{len(routes)} routes for {core.n} agents")
        net = core.net
        self.next_edge: list[dict[int, int]] = []
        for route in routes:
            hop = {}
            for u, v in zip(route[:-1], route[1:], strict=True):
                e = net.edge_between(u, v)
                if e < 0:
                    raise ValueError(f"route step {u}->{v} is not an edge of '{net.name}'")
                hop.setdefault(u, e)
            self.next_edge.append(hop)
        self.fallback = ShortestPathPolicy()

    def __call__(self, core: RoutingCore) -> np.ndarray:
        actions = self.fallback(core)
        for i in np.flatnonzero(core.status == AT_NODE).tolist():
            e = self.next_edge[i].get(int(core.node[i]))
            if e is not None:
                actions[i] = e - core.net.indptr[core.node[i]]
        return actions


POLICIES = {
    "random": RandomPolicy,
    "shortest-path": ShortestPathPolicy,
    "congestion-aware": CongestionAwarePolicy,
}


def make_policy(name: str, seed: int = 0) -> BatchPolicy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](seed) if name == "random" else POLICIES[name]()
