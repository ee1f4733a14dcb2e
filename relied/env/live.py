"""Live routing costs: cost-to-go on the travel times an entering vehicle would see now.

The live-detour slot feature and the congestion-aware policy both need, at every step, the
cheapest cost from every node to the destination of each learner deciding in it, on the
current entering travel times. :class:`LiveCostToGo` computes it once per step and hands the
same arrays to every reader of that step.

Cost at scale. Only the destinations of the learners deciding in a step are computed (one
Dijkstra each, on a reversed graph whose structure is built once per episode; a step only
writes the new edge costs into it). Up to :data:`PER_STEP_LEARNERS` learners every needed
destination is recomputed every step (the exact live view). Above it, a navigation app's
view: each destination's cost-to-go is kept and reused for :data:`REUSE_STEPS` steps (30 s at
the default ``dt_s`` of 1 s, about how often such apps refresh their traffic) before it is
computed again on the costs of that step; the first edge of every slot is always priced on
the current costs. At 10,000 learners this is what keeps the live view off the step's
critical path (docs/training.md, "Limits at scale").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from relied.env.network import CityNetwork

#: learners up to which every needed destination is recomputed every step
PER_STEP_LEARNERS = 1_000
#: above it, steps a destination's cost-to-go is reused before it is recomputed
REUSE_STEPS = 30


def cost_to_go(net: CityNetwork, targets: np.ndarray, weight: np.ndarray | None = None,
               reverse: ReverseGraph | None = None):
    """``(len(targets), n_nodes)`` cheapest cost from every node to each target (on
    ``reverse``, the network's :class:`ReverseGraph`, when given: same result, no rebuild)."""
    if reverse is None:
        graph = net.sparse(weight).T.tocsr()
    else:
        graph = reverse.weighted(net.freeflow_s if weight is None else weight)
    return dijkstra(graph, indices=np.asarray(targets))


def reuse_steps(n_learners: int) -> int:
    """Steps a destination's live cost-to-go is reused (1: recomputed every step)."""
    return 1 if n_learners <= PER_STEP_LEARNERS else REUSE_STEPS


class ReverseGraph:
    """The network reversed (``to -> from``) as a CSR matrix whose structure is built once;
    :meth:`weighted` writes one cost per edge into it (parallel edges keep the cheapest, as
    :meth:`CityNetwork.sparse` does)."""

    def __init__(self, net: CityNetwork):
        order = np.lexsort((net.edge_src, net.edge_dst))  # reversed rows: by (dst, src)
        dst, src = net.edge_dst[order], net.edge_src[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = (dst[1:] != dst[:-1]) | (src[1:] != src[:-1])
        self.order, self.starts = order, np.flatnonzero(first)
        self.matrix = csr_matrix((np.ones(self.starts.size), (dst[first], src[first])),
                                 shape=(net.n_nodes,) * 2)
        self.matrix.sort_indices()  # entry j of its data: pair j in (dst, src) order

    def weighted(self, cost: np.ndarray) -> csr_matrix:
        self.matrix.data = np.minimum.reduceat(cost[self.order], self.starts)
        return self.matrix


class LiveCostToGo:
    """Cost-to-go on current edge costs for the destinations of the deciding learners, one
    computation per step key (a new episode makes a new instance). A destination's row is
    reused for ``reuse`` steps (:func:`reuse_steps` of the learners by default)."""

    def __init__(self, net: CityNetwork, n_learners: int, reuse: int | None = None):
        self.net, self.n = net, n_learners
        self.reuse = reuse_steps(n_learners) if reuse is None else reuse
        self._graph = ReverseGraph(net)
        self._key: int | None = None
        self._value: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._table = np.zeros((0, net.n_nodes))  # one row per destination computed
        self._row = np.full(net.n_nodes, -1, dtype=np.int64)  # destination node -> row
        self._born = np.zeros(0, dtype=np.int64)  # step key each row was computed at

    def get(self, key: int, edge_cost: Callable[[], np.ndarray], dest: np.ndarray,
            deciding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cost, to_go, row_of)``: ``cost`` per edge, ``to_go[row_of[i]]`` the cheapest
        cost from every node to deciding learner ``i``'s destination ``dest[i]``."""
        if self._value is not None and self._key == key:
            return self._value
        cost = edge_cost()
        if self.reuse <= 1:  # nothing is kept between steps
            self._row.fill(-1)
            self._table, self._born = self._table[:0], self._born[:0]
        row_of = np.zeros(self.n, dtype=np.int64)
        if deciding.size:
            dests = np.unique(dest[deciding])
            row = self._row[dests]
            fresh = row >= 0
            fresh[fresh] = key - self._born[row[fresh]] < self.reuse
            stale = dests[~fresh]
            if stale.size:
                self._store(key, stale, cost_to_go(self.net, stale, cost, self._graph))
            row_of[deciding] = self._row[dest[deciding]]
        self._key, self._value = key, (cost, self._table, row_of)
        return self._value

    def _store(self, key: int, dests: np.ndarray, rows: np.ndarray) -> None:
        new = dests[self._row[dests] < 0]
        if new.size:
            self._row[new] = np.arange(len(self._table), len(self._table) + new.size)
            self._table = np.concatenate([self._table, np.empty((new.size, self.net.n_nodes))])
            self._born = np.concatenate([self._born, np.zeros(new.size, dtype=np.int64)])
        self._table[self._row[dests]] = rows
        self._born[self._row[dests]] = key

