"""Live routing costs: cost-to-go on the travel times an entering vehicle would see now.

The live-detour slot feature and the congestion-aware policy both need, at every step, the
cheapest cost from every node to the destination of each learner deciding in it, on the
current entering travel times. :class:`LiveCostToGo` computes it once per step and hands the
same arrays to every reader of that step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse.csgraph import dijkstra

from relied.env.network import CityNetwork


def cost_to_go(net: CityNetwork, targets: np.ndarray, weight: np.ndarray | None = None):
    """``(len(targets), n_nodes)`` cheapest cost from every node to each target."""
    reverse = net.sparse(weight).T.tocsr()
    return dijkstra(reverse, indices=np.asarray(targets))


class LiveCostToGo:
    """Cost-to-go on current edge costs for the destinations of the deciding learners, one
    computation per step key (a new episode makes a new instance)."""

    def __init__(self, net: CityNetwork, n_learners: int):
        self.net, self.n = net, n_learners
        self._key: int | None = None
        self._value: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def get(self, key: int, edge_cost: Callable[[], np.ndarray], dest: np.ndarray,
            deciding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cost, to_go, row_of)``: ``cost`` per edge, ``to_go[row_of[i]]`` the cheapest
        cost from every node to deciding learner ``i``'s destination ``dest[i]``."""
        if self._value is not None and self._key == key:
            return self._value
        cost = edge_cost()
        row_of = np.zeros(self.n, dtype=np.int64)
        if deciding.size:
            dests, row_of[deciding] = np.unique(dest[deciding], return_inverse=True)
            to_go = cost_to_go(self.net, dests, cost)
        else:
            to_go = np.zeros((0, self.net.n_nodes))
        self._key, self._value = key, (cost, to_go, row_of)
        return self._value
