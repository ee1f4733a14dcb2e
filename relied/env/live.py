"""Live routing costs: cost-to-go on the travel times an entering vehicle would see now.

The live-detour slot feature and the congestion-aware policy both need, at every step, the
cheapest cost from every node to the destination of each learner deciding in it, on the
current entering travel times. :class:`LiveCostToGo` computes it once per step and hands the
same arrays to every reader of that step.

Cost at scale. Only the destinations of the learners deciding in a step are computed (one
Dijkstra each, on a reversed graph whose structure is built once per episode; a step only
writes the new edge costs into it). Up to :data:`PER_STEP_LEARNERS` learners the view is
exact every step: a destination's row is recomputed whenever the edge costs changed since it
was computed (on unchanged costs Dijkstra would give the very same row). Above it, a
navigation app's view: each destination's cost-to-go is kept and reused for
:data:`REUSE_STEPS` steps (30 s at the default ``dt_s`` of 1 s, about how often such apps
refresh their traffic) before it is computed again on the costs of that step; the first edge
of every slot is always priced on the current costs. At 10,000 learners this is what keeps
the live view off the step's critical path (docs/training.md, "Limits at scale").

Exact choices without every Dijkstra (:meth:`LiveCostToGo.best_slots`, the congestion-aware
policy, up to :data:`PER_STEP_LEARNERS`). A learner picks the slot ``k`` minimising ``cost[e_k]
+ to_go[head(e_k)]``. ``to_go`` is bounded below by the free-flow cost-to-go (no edge is
faster than free flow) and above by a row computed a few steps ago plus every cost increase
since then on the edges of that row's ball (a path's cost rises by at most the increases on
its edges, and the old best path from ``head`` only uses edges whose tail is no farther than
``head``). When the best slot's upper bound is strictly below every other slot's lower bound
the choice is certain, exactly the one a fresh Dijkstra gives; a destination is computed only
for the learners whose choice the bounds leave open. The lower bound is the cost-to-go on a
:class:`CostFloor`: edge weights no cost is below (free flow; with signals, plus the mean red
wait the queue model's delay always includes).

Compiled (where numba's JIT is on; ``compiled=False`` or ``NUMBA_DISABLE_JIT=1``: scipy and
numpy, the reference). Rows come from :func:`relied.env.kernel.cost_to_go_rows`, scipy's
values bit for bit; a row computed for the bounded choice is searched only until the heads
of its open learners are settled (exact there and on the ball inside them, inf elsewhere:
an upper bound the bounds may use, never handed to :meth:`LiveCostToGo.get`'s readers, which
get complete rows), and the bounds run in :func:`relied.env.kernel.floor_choice` and
:func:`relied.env.kernel.bounded_choice`.
Every choice is the one exact rows give, so results are the reference's, bit for bit
(``tests/test_core_kernel.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from relied.env.kernel import COMPILED, bounded_choice, cost_to_go_rows, floor_choice, needed_heads
from relied.env.network import CityNetwork

#: learners up to which every needed destination is exact every step
PER_STEP_LEARNERS = 1_000
#: above it, steps a destination's cost-to-go is reused before it is recomputed
REUSE_STEPS = 30
#: steps an old row may bound a destination's cost-to-go (:meth:`LiveCostToGo.best_slots`)
BOUND_STEPS = 30
#: raised edges (costs above the floor) beyond which the floor's paths rarely settle a choice
#: (:meth:`LiveCostToGo._floor_choice` is skipped: the same choices, from the other bounds)
FLOOR_RAISED_MAX = 64
#: relative and absolute slack on the upper bounds (float rounding of path sums: ~1e-14)
_SLACK = 1e-9
_NO_NEED = np.zeros(0, dtype=np.int64)  # (the compiled Dijkstra: every row complete)


def cost_to_go(net: CityNetwork, targets: np.ndarray, weight: np.ndarray | None = None,
               reverse: ReverseGraph | None = None):
    """``(len(targets), n_nodes)`` cheapest cost from every node to each target (on
    ``reverse``, the network's :class:`ReverseGraph`, when given: same result, no rebuild)."""
    if reverse is None:
        graph = net.sparse(weight).T.tocsr()
    else:
        graph = reverse.weighted(net.freeflow_s if weight is None else weight)
    return dijkstra(graph, indices=np.asarray(targets))


def local_xy(net: CityNetwork) -> np.ndarray:
    """``(n_nodes, 2)`` node positions in metres on a plane (equirectangular about the
    network's mean position)."""
    lat0 = np.deg2rad(net.lat.mean())
    x = np.deg2rad(net.lon - net.lon.mean()) * 6_371_000 * np.cos(lat0)
    y = np.deg2rad(net.lat - net.lat.mean()) * 6_371_000
    return np.stack([x, y], axis=1)


@dataclass(frozen=True)
class CostFloor:
    """Weights no edge cost is below (``weights``), and the cost-to-go on them to the
    destinations of ``table``'s rows (``row[node]``: the row of destination ``node``): lower
    bounds of the live cost-to-go while every cost is at least its weight."""

    weights: np.ndarray
    table: np.ndarray
    row: np.ndarray

    @classmethod
    def build(cls, net: CityNetwork, weights: np.ndarray, dests: np.ndarray,
              table: np.ndarray | None = None) -> CostFloor:
        """The floor of ``weights`` for destinations ``dests`` (``table``: their cost-to-go
        on ``weights`` where already computed)."""
        row = np.full(net.n_nodes, -1, dtype=np.int64)
        row[dests] = np.arange(len(dests))
        if table is None:
            table = cost_to_go(net, dests, weights)
        return cls(weights, table, row)


def reuse_steps(n_learners: int) -> int:
    """Steps a destination's live cost-to-go is reused (1: exact every step)."""
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
    reused for ``reuse`` steps (:func:`reuse_steps` of the learners by default; 1: reused
    only while the edge costs stay the same). ``compiled``: rows by the compiled Dijkstra
    (:func:`cost_to_go`; the default where numba's JIT is on), else scipy's: the same values."""

    def __init__(self, net: CityNetwork, n_learners: int, reuse: int | None = None,
                 compiled: bool = COMPILED):
        self.net, self.n, self.compiled = net, n_learners, compiled
        self.reuse = reuse_steps(n_learners) if reuse is None else reuse
        self._graph = ReverseGraph(net)
        self._key: int | None = None
        self._value: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._rows = np.zeros((0, net.n_nodes))  # one row per destination computed, and room
        self._used = 0  # rows in use
        self._row = np.full(net.n_nodes, -1, dtype=np.int64)  # destination node -> row
        self._born = np.zeros(0, dtype=np.int64)  # step key each row was computed at
        self._complete = np.zeros(0, dtype=bool)  # row exact at every node (else a ball)
        # the step's edge costs, and (ring, by key) those of the last BOUND_STEPS keys
        self._cost_key: int | None = None
        self._cost = np.zeros(0)
        self._above_freeflow = False  # every edge cost at least its free-flow time
        self._changed_at = -1  # step key since which the edge costs are what they are
        self._ring = np.zeros((BOUND_STEPS + 1, net.n_edges))
        self._ring_key = np.full(BOUND_STEPS + 1, -1, dtype=np.int64)
        self._floor_checked: tuple[int, int] | None = None  # (:meth:`holds`)
        self._floor_holds = False
        self._rise_key: tuple[int, int] | None = None  # (:meth:`_rises`)
        self._rise: tuple = (None, None, None)
        self._xy = local_xy(net)
        self._paces: dict[int, float] = {}  # (:meth:`_pace`)

    def load(self) -> None:
        """Build (or load from numba's disk cache) the compiled kernels now, not in a step."""
        if self.compiled:
            net, one = self.net, np.zeros(1, dtype=np.int64)
            self.rows(one, net.freeflow_s)
            k = net.max_out_degree
            edges, no = np.zeros((1, k), dtype=np.int64), np.zeros((1, k), dtype=bool)
            floor_choice(net.freeflow_s, np.zeros((1, k)), no, edges, net.edge_dst,
                         np.zeros(0), net.edge_src[:0], self._xy, 1.0,
                         np.zeros((1, net.n_nodes)), one, _SLACK)
            heads = net.edge_dst[edges]
            bounded_choice(net.freeflow_s, one, one, np.zeros(1, dtype=bool), edges, heads, no,
                           np.zeros((1, k)), self._row, self._born, self._rows, self._ring,
                           self._ring_key, net.edge_src, _SLACK)
            needed_heads(np.zeros(1, dtype=bool), one, np.zeros(1, dtype=bool), heads, no)

    def rows(self, dests: np.ndarray, cost: np.ndarray,
             need: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, complete)``: :func:`cost_to_go` of ``dests`` on edge costs ``cost``
        (compiled: :func:`relied.env.kernel.cost_to_go_rows`, the same values as scipy's
        Dijkstra without its per-call overhead; with ``need``, each row searched only until
        its needed nodes are settled, ``complete`` False where it stopped early)."""
        if not self.compiled:
            return cost_to_go(self.net, dests, cost, self._graph), np.ones(len(dests), bool)
        graph = self._graph.weighted(cost)
        return cost_to_go_rows(graph.indptr, graph.indices, graph.data,
                               np.asarray(dests, dtype=np.int64), self.net.n_nodes,
                               *(need or (_NO_NEED, _NO_NEED)))

    @property
    def _table(self) -> np.ndarray:
        return self._rows[: self._used]

    def _costs_now(self, key: int, edge_cost: Callable[[], np.ndarray]) -> np.ndarray:
        """The edge costs of step ``key`` (asked once per key)."""
        if self._cost_key != key:
            cost = edge_cost()
            if self._cost_key is None or np.count_nonzero(cost != self._cost):
                self._changed_at = key
                # (a lower bound of ``best_slots``: every cost at least its free-flow time)
                self._above_freeflow = bool((cost >= self.net.freeflow_s).all())
            self._cost_key, self._cost = key, cost
            if self.reuse <= 1:
                self._ring[key % self._ring_key.size] = cost
                self._ring_key[key % self._ring_key.size] = key
        return self._cost

    def _stale(self, key: int, dests: np.ndarray) -> np.ndarray:
        """Which of ``dests`` need a new row at step ``key``."""
        row = self._row[dests]
        fresh = row >= 0
        born = self._born[row[fresh]]
        if self.reuse <= 1:  # exact: computed on the costs of now
            fresh[fresh] = born >= self._changed_at
        else:
            fresh[fresh] = key - born < self.reuse
        return ~fresh

    def get(self, key: int, edge_cost: Callable[[], np.ndarray], dest: np.ndarray,
            deciding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cost, to_go, row_of)``: ``cost`` per edge, ``to_go[row_of[i]]`` the cheapest
        cost from every node to deciding learner ``i``'s destination ``dest[i]``."""
        if self._value is not None and self._key == key:
            return self._value
        cost = self._costs_now(key, edge_cost)
        row_of = np.zeros(self.n, dtype=np.int64)
        if deciding.size:
            dests = np.unique(dest[deciding])
            self._compute(key, dests[self._stale(key, dests) | self._partial(dests)])
            row_of[deciding] = self._row[dest[deciding]]
        self._key, self._value = key, (cost, self._table, row_of)
        return self._value

    def _partial(self, dests: np.ndarray) -> np.ndarray:
        """Which of ``dests`` have a row that is not complete (exact only on a ball)."""
        row = self._row[dests]
        out = row >= 0
        out[out] = ~self._complete[row[out]]
        return out

    def holds(self, key: int, edge_cost: Callable[[], np.ndarray], floor: CostFloor) -> bool:
        """Whether every edge cost of step ``key`` is at least ``floor``'s weight."""
        cost = self._costs_now(key, edge_cost)
        if self._floor_checked != (self._changed_at, id(floor)):
            self._floor_checked = (self._changed_at, id(floor))
            self._floor_holds = bool((cost >= floor.weights).all())
        return self._floor_holds

    def best_slots(self, key: int, edge_cost: Callable[[], np.ndarray], dest: np.ndarray,
                   deciding: np.ndarray, edges: np.ndarray, valid: np.ndarray,
                   lower: np.ndarray, floor: CostFloor | None = None,
                   floor_rows: np.ndarray | None = None) -> np.ndarray:
        """For each ``deciding`` learner, the slot minimising ``cost[e] + to_go[head(e)]`` over
        its ``valid`` slots (``edges``: ``(m, K)`` edge of each slot), the first of equals: what
        :meth:`get`'s rows give. ``lower``: ``(m, K)`` lower bounds of ``to_go`` at the slots'
        heads (the cost-to-go on a :class:`CostFloor` whose weights hold, at least free flow:
        every cost must be at least its edge's free-flow time). Up to
        :data:`PER_STEP_LEARNERS`, a destination is computed only for learners whose choice
        the bounds leave open (module docstring); the choices are the same. ``floor`` (the
        floor of ``lower``, ``floor_rows``: its row of each learner's destination) first
        settles what its own paths settle (:meth:`_floor_choice`)."""
        heads = self.net.edge_dst[edges]
        cost = self._costs_now(key, edge_cost)
        if self.reuse <= 1 and not (self._value is not None and self._key == key) \
                and self._above_freeflow:
            if floor is not None:  # certain from the floor's own paths: no row at all
                sure, pick = self._floor_choice(cost, floor, floor_rows, edges, valid, lower)
                if np.count_nonzero(sure) == sure.size:
                    return pick
                if np.count_nonzero(sure):
                    rest = ~sure
                    pick[rest] = self._open_slots(key, cost, dest, deciding[rest],
                                                  edges[rest], heads[rest], valid[rest],
                                                  lower[rest])
                    return pick
            return self._open_slots(key, cost, dest, deciding, edges, heads, valid, lower)
        _, table, row_of = self.get(key, edge_cost, dest, deciding)
        return _argmin_slots(cost, table, row_of[deciding], edges, heads, valid)

    def _floor_choice(self, cost: np.ndarray, floor: CostFloor, rows: np.ndarray,
                      edges: np.ndarray, valid: np.ndarray,
                      lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sure, pick)`` per learner from ``floor``'s paths alone (no row of the live
        cost-to-go): the floor's cheapest path from a head costs now its floor cost-to-go plus
        the rises (cost over weight) of its edges, all of whose tails are no farther (on the
        floor) from the destination than that head; so ``lower`` plus every rise on an edge
        whose tail is no farther bounds the live cost-to-go above. Sure where the best slot's
        upper bound is strictly below every other slot's lower bound (what a fresh Dijkstra
        then picks). Light load: few edges above their floor, most choices settle here."""
        raised, rise, tails = self._rises(cost, floor)
        if raised is None or raised.size > FLOOR_RAISED_MAX:  # no bound, or not worth it
            return np.zeros(edges.shape[0], dtype=bool), np.zeros(edges.shape[0], np.int64)
        if self.compiled:
            return floor_choice(cost, lower, valid, edges, self.net.edge_dst, rise, tails,
                                self._xy, self._pace(floor), floor.table, rows, _SLACK)
        via = np.where(valid, cost[edges] + lower, np.inf)
        at = np.arange(via.shape[0])
        pick = via.argmin(axis=1)
        top = via[at, pick]
        if raised.size:  # rises on edges whose tail can lie on the floor path from the head
            reach = lower[at, pick]
            head = self.net.edge_dst[edges[at, pick]]
            gap = np.hypot(*(self._xy[tails][None] - self._xy[head][:, None]).transpose(2, 0, 1))
            gap *= self._pace(floor)
            gap += floor.table[rows[:, None], tails]
            near = gap <= reach[:, None] * (1 + _SLACK) + _SLACK
            top = top + (near * rise).sum(axis=1)
        via[at, pick] = np.inf
        top += np.abs(top) * _SLACK + _SLACK
        return top < via.min(axis=1), pick

    def _pace(self, floor: CostFloor) -> float:
        """Seconds per metre of straight line no path is below on ``floor``'s weights (the
        least weight / chord of any edge, less the slack): a node at straight-line distance
        ``x`` from another is at least ``x`` times it away on the floor."""
        if id(floor) not in self._paces:
            chord = np.hypot(*(self._xy[self.net.edge_dst] - self._xy[self.net.edge_src]).T)
            moves = chord > 0
            pace = float((floor.weights[moves] / chord[moves]).min()) if moves.any() else 0.0
            self._paces[id(floor)] = max(pace, 0.0) * (1 - 1e-6)
        return self._paces[id(floor)]

    def _rises(self, cost: np.ndarray, floor: CostFloor):
        """``(edges above floor's weight, by how much, their tails)`` for the costs of now
        (``None``s where a cost is below its weight), once per change of the costs."""
        if self._rise_key != (self._changed_at, id(floor)):
            self._rise_key = (self._changed_at, id(floor))
            over = cost - floor.weights
            if np.count_nonzero(over < 0):
                self._rise = None, None, None
            else:
                raised = over.nonzero()[0]
                self._rise = raised, over[raised], self.net.edge_src[raised]
        return self._rise

    def _open_slots(self, key: int, cost: np.ndarray, dest: np.ndarray, deciding: np.ndarray,
                    edges: np.ndarray, heads: np.ndarray, valid: np.ndarray,
                    lower: np.ndarray) -> np.ndarray:
        """:meth:`best_slots` (exact every step, costs at least free flow) of learners the
        floor's paths leave open: forced slots, then the bounds of old rows, then rows."""
        # a learner with one valid slot (its destination reachable from there) takes it
        forced = (np.count_nonzero(valid, axis=1) == 1) & \
            np.isfinite(np.where(valid, lower, np.inf).min(axis=1))
        if not np.count_nonzero(forced):
            return self._bounded_slots(key, cost, dest, deciding, edges, heads, valid, lower)
        out = valid.argmax(axis=1)
        free = ~forced
        if np.count_nonzero(free):
            out[free] = self._bounded_slots(key, cost, dest, deciding[free], edges[free],
                                            heads[free], valid[free], lower[free])
        return out

    def _bounded_slots(self, key: int, cost: np.ndarray, dest: np.ndarray,
                       deciding: np.ndarray, edges: np.ndarray, heads: np.ndarray,
                       valid: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """:meth:`best_slots` up to :data:`PER_STEP_LEARNERS`: certain choices from the bounds,
        the others from rows computed on the costs of now."""
        dests, inv = _unique(dest[deciding])
        stale = self._stale(key, dests)
        sure = np.zeros(deciding.size, dtype=bool)
        pick = np.zeros(deciding.size, dtype=np.int64)
        bounded = stale & (self._row[dests] >= 0)
        if np.count_nonzero(bounded):
            if self.compiled:
                sure, pick = bounded_choice(cost, dests, inv, bounded, edges, heads, valid,
                                            lower, self._row, self._born, self._rows,
                                            self._ring, self._ring_key, self.net.edge_src,
                                            _SLACK)
            else:
                sure, pick = self._bounded_choice(key, cost, dests, inv, bounded, edges, heads,
                                                  valid, lower)
        open_dests = np.zeros(dests.size, dtype=bool)
        open_dests[inv[~sure]] = True
        rest = ~sure
        todo = open_dests & (stale | self._partial(dests))
        if self.compiled and np.count_nonzero(todo):  # searched until their heads are settled
            self._compute(key, dests[todo], needed_heads(todo, inv, rest, heads, valid))
        else:
            self._compute(key, dests[todo])
        if np.count_nonzero(rest):
            rows = self._row[dest[deciding[rest]]]
            pick[rest] = _argmin_slots(cost, self._rows, rows, edges[rest], heads[rest],
                                       valid[rest])
        return pick

    def _bounded_choice(self, key, cost, dests, inv, bounded, edges, heads, valid, lower):
        """``(sure, pick)`` per deciding learner: whether its best slot is certain from the
        bounds (learners of ``bounded`` destinations whose old row is at most
        :data:`BOUND_STEPS` steps old), and that slot."""
        m = inv.size
        sure, pick = np.zeros(m, dtype=bool), np.zeros(m, dtype=np.int64)
        row = self._row[dests]
        born = self._born[row]
        bounded = bounded & (self._ring_key[born % self._ring_key.size] == born)
        r = bounded[inv].nonzero()[0]  # the learners of those destinations
        if r.size == 0:
            return sure, pick
        old_to_go = self._rows[row[inv[r]][:, None], heads[r]]
        upper = np.where(valid[r], cost[edges[r]] + old_to_go, np.inf)
        best = upper.argmin(axis=1)
        low = np.where(valid[r], cost[edges[r]] + lower[r], np.inf)
        low[np.arange(r.size), best] = np.inf
        # each destination's ball: edges whose tail is no farther than its learners' farthest
        # best head; the cost increases since its row was computed, summed over the ball
        reach = np.full(dests.size, -np.inf)
        np.maximum.at(reach, inv[r], old_to_go[np.arange(r.size), best])
        # (only edges whose cost rose since one of those rows was computed add anything: a
        # few dozen of the network's, so the sums run over those alone)
        d = bounded.nonzero()[0]
        ring = born[d] % self._ring_key.size
        seen = np.zeros(self._ring_key.size, dtype=bool)
        seen[ring] = True
        rose = (cost > self._ring[seen]).any(axis=0).nonzero()[0]
        slack = np.zeros(dests.size)
        if rose.size:
            rise = cost[rose] - self._ring[ring[:, None], rose]
            np.maximum(rise, 0.0, out=rise)
            rise *= self._rows[row[d][:, None], self.net.edge_src[rose]] <= reach[d, None]
            slack[d] = rise.sum(axis=1)
        top = upper[np.arange(r.size), best] + slack[inv[r]]
        top += np.abs(top) * _SLACK + _SLACK
        sure[r] = top < low.min(axis=1)
        pick[r] = best
        return sure, pick

    def _compute(self, key: int, dests: np.ndarray,
                 need: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Compute and store the rows of ``dests`` on the costs of step ``key`` (``need``,
        compiled only: ``(need_ptr, need)`` of :func:`relied.env.kernel.cost_to_go_rows`,
        each row searched only until its needed nodes are settled: exact there and on the
        ball inside them, inf elsewhere; a valid upper bound for :meth:`_bounded_choice`)."""
        if dests.size == 0:
            return
        rows, complete = self.rows(dests, self._cost, need)
        new = dests[self._row[dests] < 0]
        if new.size:
            if self._used + new.size > len(self._rows):  # room doubles
                grow = max(self._used + new.size, 2 * len(self._rows), 8)
                rows_, born = np.empty((grow, self.net.n_nodes)), np.zeros(grow, np.int64)
                rows_[: self._used], born[: self._used] = self._table, self._born[: self._used]
                whole = np.zeros(grow, dtype=bool)
                whole[: self._used] = self._complete[: self._used]
                self._rows, self._born, self._complete = rows_, born, whole
            self._row[new] = np.arange(self._used, self._used + new.size)
            self._used += new.size
        self._rows[self._row[dests]] = rows
        self._born[self._row[dests]] = key
        self._complete[self._row[dests]] = complete


def _argmin_slots(cost: np.ndarray, table: np.ndarray, rows: np.ndarray, edges: np.ndarray,
                  heads: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per learner, the valid slot minimising ``cost[e] + table[row, head(e)]``."""
    via = cost[edges] + table[rows[:, None], heads]
    return np.where(valid, via, np.inf).argmin(axis=1)


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)``, at once for a single value."""
    if values.size == 1:
        return values, np.zeros(1, dtype=np.int64)
    ordered = np.sort(values)  # (np.unique's own steps, without its general wrapper)
    keep = np.empty(ordered.size, dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    unique = ordered[keep]
    return unique, unique.searchsorted(values)
