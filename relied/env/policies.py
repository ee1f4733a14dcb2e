"""Reference policies over the batched core: each maps a :class:`RoutingCore` to actions.

* :class:`RandomPolicy`: uniform over the valid slots of the action mask.
* :class:`ShortestPathPolicy`: free-flow shortest path to the destination.
* :class:`CongestionAwarePolicy`: at every intersection, the fastest way on as an entering
  vehicle would see the network now (free-flow time plus the delay of the queue it would join,
  :meth:`RoutingCore.edge_delay`), re-planned at each decision.
* :class:`RoutePolicy`: follows given node routes (how expert plans are executed).
* ``equilibrium`` (:mod:`relied.env.equilibrium`): routes of a dynamic user equilibrium.

All of them choose among the slots of :meth:`RoutingCore.action_mask`, the mask learners get.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from relied.env.core import AT_NODE, RoutingCore


class BatchPolicy(Protocol):
    def __call__(self, core: RoutingCore) -> np.ndarray: ...


def greedy_actions(core: RoutingCore, edge_cost: np.ndarray, to_go: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """For deciding learners pick the valid slot minimising ``edge_cost[e] + to_go[row,
    head(e)]``; everyone else gets the no-op."""
    actions = np.full(core.n, core.noop, dtype=np.int64)
    deciding, valid = core.deciding_mask()
    if deciding.size == 0:
        return actions
    se = np.maximum(core.out_table[core.node[deciding]], 0)
    cost = edge_cost[se] + to_go[rows[deciding][:, None], core.net.edge_dst[se]]
    actions[deciding] = np.where(valid, cost, np.inf).argmin(axis=1)
    return actions


class RandomPolicy:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, core: RoutingCore) -> np.ndarray:
        mask = core.action_mask()
        return np.argmax(self.rng.random(mask.shape) * mask, axis=1)


class ShortestPathPolicy:
    def __call__(self, core: RoutingCore) -> np.ndarray:
        return greedy_actions(core, core.net.freeflow_s, core.ff_to_dest, core.dest_row)


class CongestionAwarePolicy:
    """Fastest way on at each intersection on current entering travel times (queue delay plus
    own traversal); cost-to-go is the core's live one (:meth:`RoutingCore.live_to_go`), exact
    every step up to 1,000 learners (:meth:`RoutingCore.live_best_slots` computes a
    destination only where bounds leave a choice open: the same choices)."""

    def __call__(self, core: RoutingCore) -> np.ndarray:
        actions = np.full(core.n, core.noop, dtype=np.int64)
        deciding, valid = core.deciding_mask()
        if deciding.size:
            actions[deciding] = core.live_best_slots(deciding, valid)
        return actions


class RoutePolicy:
    """Drives each learner along its node route (at a node the route visits twice, the first
    visit's edge); off-route learners and steps the mask forbids fall back to the free-flow
    shortest path."""

    def __init__(self, core: RoutingCore, routes: list[list[int]]):
        if len(routes) != core.n:
            raise ValueError(f"{len(routes)} routes for {core.n} agents")
        net = core.net
        keys, edges = [], []
        for i, route in enumerate(routes):
            seen = set()
            for u, v in zip(route[:-1], route[1:], strict=True):
                e = net.edge_between(u, v)
                if e < 0:
                    raise ValueError(f"route step {u}->{v} is not an edge of '{net.name}'")
                if u not in seen:
                    seen.add(u)
                    keys.append(i * net.n_nodes + u)
                    edges.append(e)
        order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
        self.keys = np.asarray(keys, dtype=np.int64)[order]
        self.edges = np.asarray(edges, dtype=np.int64)[order]
        self.fallback = ShortestPathPolicy()

    def __call__(self, core: RoutingCore) -> np.ndarray:
        actions = self.fallback(core)
        deciding = np.flatnonzero(core.status == AT_NODE)
        if deciding.size == 0 or self.keys.size == 0:
            return actions
        node = core.node[deciding]
        key = deciding * core.net.n_nodes + node
        pos = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        slot = self.edges[pos] - core.net.indptr[node]
        found = self.keys[pos] == key
        mask = core.action_mask()[deciding]
        take = found & mask[np.arange(deciding.size), np.clip(slot, 0, core.k)]
        actions[deciding[take]] = slot[take]
        return actions


POLICIES = ("random", "shortest-path", "congestion-aware", "equilibrium")


def make_policy(name: str, seed: int = 0) -> BatchPolicy:
    """A reference policy by name (``equilibrium`` solves a dynamic user equilibrium first,
    on the core it is first called with)."""
    if name == "random":
        return RandomPolicy(seed)
    if name == "shortest-path":
        return ShortestPathPolicy()
    if name == "congestion-aware":
        return CongestionAwarePolicy()
    if name == "equilibrium":
        from relied.env.equilibrium import EquilibriumPolicy

        return EquilibriumPolicy()
    raise ValueError(f"unknown policy '{name}'; choose one of {', '.join(POLICIES)}")
