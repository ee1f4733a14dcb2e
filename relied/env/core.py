"""Batched, time-stepped mesoscopic traffic simulator: all vehicles advance in numpy at once.

Link model (``Scenario.traffic_model``):

* ``"queue"`` (default): a *spatial queue* per edge, the queue model of MATSim's QSim
  (Gawron 1998; Cetin, Burri & Nagel 2003). A vehicle entering an edge drives it at free-flow
  speed to the stop line, then leaves in FIFO order at the edge's saturation flow
  times the green share its intersection gives it (``CityNetwork.green_share``): the j-th
  vehicle leaves at ``d_j = max(ready_j, d_{j-1} + headway)``, ``headway = 1 / (saturation
  * green_share)`` (deterministic D/D/1 discharge at the approach's mean capacity), and only
  when its next edge holds fewer than ``CityNetwork.storage`` vehicles, so a full edge refuses
  entry and queues spill back upstream. A vehicle held at the head of a queue for
  ``stuck_time_s`` by a full next edge enters anyway (MATSim's ``stuckTime``), which dissolves
  the gridlocks spatial queues can form.
* ``"bpr"`` (kept for comparison): the traversal time is fixed when a vehicle enters,
  ``t0 * min(1 + alpha (others / capacity) ** beta, max_slowdown)``; no capacity, no queue.

Traffic signals (``Scenario.signals``, off by default; off, nothing below runs and every
figure is as before): each signalised junction of ``CityNetwork.signal`` runs a fixed-time
plan (:mod:`relied.env.signals`: 90 s cycle, opposite approaches in one phase, netconvert's
default green split). A vehicle leaving a controlled approach into the junction leaves at
``green(max(ready_j, d_{j-1} + headway))``, the first moment at or after that time when its
approach shows green, with ``headway = 1 / saturation`` (the light, not ``green_share``,
shares the time out); leaving the network at the stop line needs no green. Clocks stay
exact: the wait is dated to the second, not rounded to a step. The delay an entering vehicle
would meet (:meth:`RoutingCore.edge_delay`) adds the mean red wait ``r^2 / (2 C)`` and counts
the queue at the approach's mean capacity ``saturation * green / cycle``.

Time is exact per vehicle. Each vehicle carries its own clock: it reaches a stop line at a
continuous time, decides its next edge at the next step, and that decision is dated back to
the moment it reached the stop line, so decisions cost no time and short edges are not rounded
up to a step. The price is that a vehicle crossing several edges shorter than a step lags the
simulation clock by up to a few steps (it still crosses one edge per step); it catches up
on longer edges and in queues. A learner's reward each step is minus the time its own clock
advanced, so its rewards sum exactly to minus its travel time (in ``time_scale_s`` units).

Cost: a step touches only the vehicles en route (departed, not arrived; ``active``, kept by
state changes), numpy throughout with no per-vehicle Python loop; where numba's JIT is on, the
queue model's discharge runs as one compiled loop instead (:mod:`relied.env.kernel`, the same
arithmetic in the same order: every result bit for bit that of the numpy path). The queue
model's extra work is kept to a few array operations per step in the uncongested case: entries
are counted in by one ``bincount`` (reused for the edges' entry counts) and checked against
what each edge can hold (ranked first come first served only where an entry is really refused),
storage is recounted over vehicles at stop lines only in the retry after the step's moves
(before them every such vehicle has just decided, so ``stored`` equals ``count``), and the
retry itself is skipped where every held queue is bound to an edge that stays full; the
per-edge FIFO chain is computed only where a queue's second vehicle can leave within the step
(otherwise at most one vehicle leaves each edge, and moves are plain indexing, no
``ufunc.at``), held queues are gated only while some head waits for a full edge, and a lone
vehicle at its destination leaves without a second discharge pass. A step in which no vehicle
changes state (none departs, decides, waits at a stop line or reaches one; sparse demand has
many) only moves the clock.

Vehicle states: ``WAITING`` (before departure), ``AT_NODE`` (at an intersection or its origin,
choosing the next edge), ``QUEUED`` (next edge chosen, waiting to leave), ``ON_EDGE`` (driving
to the stop line), ``ARRIVED``. Learners are vehicles ``0..n-1``; background vehicles follow
from ``n``, choose their own edges (free-flow shortest path or logit) and are invisible to the
learning API (``obs``, ``action_mask``, rewards and metrics are per learner).

Actions are out-edge slots of the decision node (``K`` = max out-degree; slot ``K`` is the no-op
of learners not at a decision point). The mask forbids the edge straight back to where the
vehicle came from unless it is the only way on (dead ends).

Observation (``obs_dim = 4 + 7 K``, bounded in ``[-1, 10]``): ``[at_decision, elapsed/horizon,
free-flow time to go (10 min units), straight distance to go (km)]`` then per out-edge slot of
the next decision node ``[valid, detour vs. the best allowed way on (min), delay an entering
vehicle would meet now (min), fill = vehicles / storage, free-flow time (min), cos(angle to
destination), live detour (min)]``. The live detour is what a navigation app shows: the slot's
time to the destination on the travel times an entering vehicle meets now on every edge (queue
delay plus traversal, :meth:`RoutingCore.edge_travel_time`), minus the best slot's; it is
computed for learners at a decision point (0 for the others, whose rows are not decisions).
"""

from __future__ import annotations

import numpy as np

from relied.env.kernel import COMPILED, decide, discharge_queues, held_still, reach_stop_lines
from relied.env.live import CostFloor, LiveCostToGo, cost_to_go, local_xy
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario, index_of
from relied.env.signals import SignalPlan, signal_plan

WAITING, AT_NODE, QUEUED, ON_EDGE, ARRIVED = 0, 1, 2, 3, 4
GLOBAL_FEATURES, SLOT_FEATURES = 4, 7
#: most (destination, node) pairs whose free-flow choice a core remembers (one byte each)
FF_MEMO_MAX = 50_000_000
OBS_LOW, OBS_HIGH = -1.0, 10.0


class InvalidActionError(ValueError):
    """An agent at a decision point chose a slot the action mask forbids."""


def _segment_starts(keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's run of equal ``keys`` (sorted input)."""
    idx = np.arange(keys.size)
    start = np.ones(keys.size, dtype=bool)
    start[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(start, idx, 0))


def _heads(n: int, behind: tuple[int, np.ndarray]) -> np.ndarray:
    """Whether each of ``n`` FIFO-sorted vehicles heads its queue, from ``(k, behind)``: the
    first ``k`` head theirs, ``behind`` marks the others that do not."""
    start = np.ones(n, dtype=bool)
    start[behind[0]:] = ~behind[1]
    return start


def slot_mask(net: CityNetwork, out_table: np.ndarray, node: np.ndarray,
              came: np.ndarray) -> np.ndarray:
    """``(len, K)`` valid out-edge slots at ``node`` of vehicles that came by edge ``came``
    (-1: at their origin): the node's out-edges, without the edge straight back unless it is
    the only way on (dead ends)."""
    slots = out_table[node]
    valid = slots >= 0
    heads = net.edge_dst[np.maximum(slots, 0)]
    back = valid & (came[:, None] >= 0) & \
        (heads == net.edge_src[np.maximum(came, 0)][:, None])
    other = (valid & ~back).any(axis=1)
    valid[other] &= ~back[other]
    return valid


def mask_table(net: CityNetwork, out_table: np.ndarray) -> np.ndarray:
    """:func:`slot_mask` of every way to stand at a node: row ``e`` for a vehicle that came by
    edge ``e`` (at its head), row ``n_edges + v`` for one at its origin ``v``."""
    node = np.concatenate([net.edge_dst, np.arange(net.n_nodes)])
    came = np.concatenate([np.arange(net.n_edges), np.full(net.n_nodes, -1)])
    return slot_mask(net, out_table, node, came)


class RoutingCore:
    """The simulator. ``reset()`` then ``step(actions)`` with one action per learner.

    ``record_routes`` keeps every learner's edges (:meth:`agent_routes`); ``record_queues``
    keeps the queue length of every edge at every step (``queue_history``, for plots);
    ``record_traversals`` keeps every edge traversal of every vehicle (``traversals``, for
    the dynamic equilibrium). ``compiled``: the queue model's discharge, the live cost-to-go's
    Dijkstra and its floor bounds run compiled (:mod:`relied.env.kernel`; the default where
    numba's JIT is on) or in numpy/scipy (the reference); both give the same results, bit for
    bit.
    """

    def __init__(self, net: CityNetwork, scenario: Scenario, record_routes: bool = False,
                 record_queues: bool = False, record_traversals: bool = False):
        self.net = net
        self.scenario = s = scenario.resolve(net)
        self._n_steps = s.n_steps  # (asked every step)
        self.n, self.n_all = s.n_agents, s.n_vehicles
        self.k = net.max_out_degree
        self.noop = self.k
        self.obs_dim = GLOBAL_FEATURES + SLOT_FEATURES * self.k
        self.out_table = net.out_edge_table()
        self._mask_table: np.ndarray | None = None  # (:meth:`_slot_mask`)
        self._ff_slot: np.ndarray | None = None  # (:meth:`_free_flow_slots`)
        self._floors: list[CostFloor] | None = None  # (:meth:`_cost_floor`)
        self.queue_model = s.traffic_model == "queue"
        self.compiled = COMPILED
        self.headway = 1.0 / (net.saturation_vps * net.green_share)
        # traffic signals (``Scenario.signals``): a controlled approach discharges at its full
        # saturation flow during green and not at all during red; its mean capacity (for the
        # delay an entering vehicle would meet) is the saturation flow times green / cycle.
        # Edges inside a signalised cluster discharge at their saturation flow.
        self.signal_plan: SignalPlan | None = signal_plan(net) if s.signals else None
        self._delay_headway = self.headway
        if self.signal_plan is not None:
            sig = self.signal_plan
            ctl, green = sig.controlled[:-1], sig.green_s[:-1]
            full = ctl | sig.inside[:-1]  # (inside a signalised cluster: no second share)
            self.headway = np.where(full, 1.0 / net.saturation_vps, self.headway)
            self._delay_headway = np.where(ctl, sig.cycle_s / (net.saturation_vps * green),
                                           self.headway)
            self._red_wait = sig.mean_red_wait()[:-1]
        # per-edge arrays with one more entry, index -1: a vehicle at its origin (no headway,
        # no discharge slot, never held), so origins need no special case in the step
        self._headway = np.append(self.headway, 0.0)
        # ``next_edge`` of a vehicle leaving the network at its edge's head: one past the edges
        self._arrive = net.n_edges
        self._no_one = np.empty(0, dtype=np.int64)  # (the vehicles that arrive in an idle step)
        self._none, self._no_time = np.zeros(1, dtype=bool), np.zeros(1)  # (kernel: unused)
        # the most vehicles each edge can hold: a vehicle enters while fewer than ``storage``
        # are on it, so ``ceil(storage)``; two more entries, index ``_arrive`` (leaving the
        # network) and -1: never full, so the entry check needs no mask
        self._most = np.append(np.ceil(net.storage), [np.inf, np.inf])
        bg = s.n_background
        self.v_origin = np.concatenate([index_of(net, s.origins),
                                        index_of(net, s.background_origins or [])[:bg]])
        self.v_dest = np.concatenate([index_of(net, s.destinations),
                                      index_of(net, s.background_destinations or [])[:bg]])
        self.v_depart = np.asarray(list(s.departures_s) + list(s.background_departures_s or []),
                                   dtype=np.float64)
        self._depart_order = np.argsort(self.v_depart, kind="stable")
        self._depart_sorted = self.v_depart[self._depart_order]
        self._next_depart_s = self._depart_sorted.tolist() + [np.inf]  # by departures released
        self.dest_ids, self.v_dest_row = np.unique(self.v_dest, return_inverse=True)
        self.ff_to_dest = cost_to_go(net, self.dest_ids).astype(np.float64)
        self.v_ff_od = self.ff_to_dest[self.v_dest_row, self.v_origin]
        # learner views (learners are vehicles 0..n-1)
        n = self.n
        self.origin, self.dest, self.depart_s = (self.v_origin[:n], self.v_dest[:n],
                                                 self.v_depart[:n])
        self.dest_row, self.ff_od = self.v_dest_row[:n], self.v_ff_od[:n]
        self.xy = local_xy(net)
        vec = self.xy[net.edge_dst] - self.xy[net.edge_src]
        self.edge_dir = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        self.record_routes = record_routes
        self.record_queues = record_queues
        self.record_traversals = record_traversals
        self.bg_rng = np.random.default_rng([s.seed, 2])
        # FIFO sort key: (edge + 1) * _edge_key + stop-line time; the first term per edge
        # (index -1: origins, 0)
        self._edge_key = 2.0 * self.end_s + 1e4
        self._src_key = np.append((np.arange(net.n_edges) + 1) * self._edge_key, 0.0)
        m = self.n_all
        self.v_status = np.empty(m, dtype=np.int8)
        self.v_node = np.empty(m, dtype=np.int64)
        self.v_edge = np.empty(m, dtype=np.int64)
        self.next_edge = np.empty(m, dtype=np.int64)
        self.ready_s = np.empty(m)
        self.entered_s = np.empty(m)
        self.clock_s = np.empty(m)
        self.head_since = np.empty(m)
        self.v_arrival = np.empty(m)
        self.status, self.node, self.edge = self.v_status[:n], self.v_node[:n], self.v_edge[:n]
        self.arrival_s = self.v_arrival[:n]
        self.reset()
        if self.compiled:
            self._load_kernels()

    def _load_kernels(self) -> None:
        """Build (or load from numba's disk cache) the compiled kernels now, not in a step."""
        if self.queue_model:
            self._discharge_compiled(0.0, None, self._no_one)
            self._reach_stop_lines(0.0, self._no_one)
            held_still(self._no_one, self._no_one, 0.0, 1.0, self.v_edge, self._blocked_on,
                       self.blocked_since, self._count, self.net.storage)
        if self.scenario.background_choice == "shortest-path":
            self._decide_compiled(self._no_one, self._no_one)  # (nobody: nothing changes)
        self._live.load()

    @property
    def compiled(self) -> bool:
        """Whether the compiled kernels run (the queue discharge, the live cost-to-go's
        Dijkstra and floor bounds); False: their numpy/scipy references. The same results."""
        return self._compiled

    @compiled.setter
    def compiled(self, value: bool) -> None:
        self._compiled = value
        if hasattr(self, "_live"):
            self._live.compiled = value

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        """Start a new episode (same trips) and return the learners' observations."""
        e = self.net.n_edges
        self.t = 0
        self._quiet_until = -np.inf  # (:meth:`_idle`)
        self._live = LiveCostToGo(self.net, self.n, compiled=self.compiled)
        self.v_status.fill(WAITING)
        self.v_node[:] = self.v_origin
        self.v_edge.fill(-1)
        self.next_edge.fill(-1)
        self.ready_s[:] = self.v_depart
        self.entered_s.fill(np.nan)
        self.clock_s[:] = self.v_depart
        self.head_since.fill(np.nan)
        self.v_arrival.fill(np.nan)
        # vehicles on each edge (all states); ``_count`` has two more entries (see _most)
        self._count = np.zeros(e + 2, dtype=np.int64)
        self.count = self._count[:e]
        self.active = np.empty(0, dtype=np.int64)  # departed, not arrived: ascending ids
        self.n_arrived = 0  # vehicles (learners and background) arrived
        self._departed = 0  # departures released so far, in departure order
        self._held = self.active
        self._next_slot = np.full(e + 1, -np.inf)  # earliest discharge of the next vehicle
        self._blocked_on = np.full(e + 1, -1, dtype=np.int64)  # full edge a queue's head waits for
        self.next_slot, self.blocked_on = self._next_slot[:e], self._blocked_on[:e]
        self.blocked_since = np.full(e, np.nan)
        self.entries = np.zeros(e, dtype=np.int64)
        self.traversal_s = np.zeros(e)  # summed experienced traversal times
        self.forced = 0  # entries forced by the stuck time
        self._blocking = False  # whether any queue's head waits for a full edge
        self._kernel_state = None  # (:meth:`_discharge_compiled`: this episode's arrays)
        self.routes: list[tuple[np.ndarray, np.ndarray]] = []
        self.queue_history: list[np.ndarray] = []
        self.traversals: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._depart(0.0)
        return self.observe()

    @property
    def time_s(self) -> float:
        return self.t * self.scenario.dt_s

    @property
    def end_s(self) -> float:
        """Simulated time at the horizon."""
        return self.scenario.n_steps * self.scenario.dt_s

    @property
    def done(self) -> bool:
        return self.t >= self._n_steps or bool((self.status == ARRIVED).all())

    @property
    def stored(self) -> np.ndarray:
        """Vehicles taking up each edge's storage. A vehicle waiting at the stop line of an
        edge with no queue for its decision does not: in its own (back-dated) timeline it
        leaves as soon as it got there, so it must not hold a short edge's space for a step.
        (If its next edge then turns out full, it queues and counts again: an edge can hold
        one vehicle more than its storage for a step.) Counted over the vehicles en route;
        the step asks for it only where ``count`` says an edge may be full."""
        e = self.net.n_edges
        act = self.active
        status, edge = self.v_status[act], self.v_edge[act]
        queued = np.bincount(edge[status == QUEUED] + 1, minlength=e + 1)[1:]  # 0: origins
        free = act[(status == AT_NODE) & (edge >= 0)]
        at = self.v_edge[free]
        free_at = at[(queued[at] == 0) & (self.next_slot[at] <= self.ready_s[free] + 1e-9)]
        return self.count - np.bincount(free_at, minlength=e)

    def _stored_now(self) -> np.ndarray:
        """:attr:`stored` within one discharge, counted once: what the discharge changes
        before it moves anyone (held queues' slots and clocks) is not counted in it."""
        if self._stored is None:
            self._stored = self.stored
        return self._stored

    @property
    def traversal_n(self) -> np.ndarray:
        """Traversals completed on each edge (vehicles that entered it and left)."""
        return self.entries - self.count

    @property
    def occupancy(self) -> np.ndarray:
        """Vehicles on each edge (driving, queued or deciding at its end)."""
        return self.count

    def _depart(self, now: float) -> None:
        """Release the vehicles departing by ``now`` into the active set (kept ascending)."""
        if self._next_depart_s[self._departed] > now + 1e-9:
            return
        end = int(self._depart_sorted.searchsorted(now + 1e-9, side="right"))
        new = self._depart_order[self._departed:end]
        self._departed = end
        self.v_status[new] = AT_NODE
        act = self.active
        if new.size == 1:  # the usual case
            i = int(act.searchsorted(new[0]))
            self.active = np.concatenate((act[:i], new, act[i:]))
            return
        new = np.sort(new)
        at = act.searchsorted(new) + np.arange(new.size)  # places in the merged array
        merged = np.empty(act.size + new.size, dtype=act.dtype)
        old = np.ones(merged.size, dtype=bool)
        old[at] = False
        merged[at] = new
        merged[old] = act
        self.active = merged

    def edge_delay(self, now: float | None = None) -> np.ndarray:
        """Delay over free flow (s) that a vehicle entering each edge at ``now`` would meet:
        the vehicles already on it leave first, one per headway (queue model), or the BPR
        slowdown of the current occupancy."""
        net = self.net
        if not self.queue_model:
            return self._bpr_time(np.arange(net.n_edges), self.count) - net.freeflow_s
        now = self.time_s if now is None else now
        clear = np.maximum(self.next_slot, now)
        clear += self.count * self._delay_headway
        clear -= now + net.freeflow_s
        np.maximum(clear, 0.0, out=clear)
        if self.signal_plan is not None:  # plus the mean wait at a red light
            clear += self._red_wait
        return clear

    def edge_travel_time(self) -> np.ndarray:
        """Travel time (s) of each edge for a vehicle entering now (free flow + delay)."""
        return self.net.freeflow_s + self.edge_delay()

    def _bpr_time(self, edges: np.ndarray, others: np.ndarray) -> np.ndarray:
        s, net = self.scenario, self.net
        factor = 1.0 + s.bpr_alpha * (others / net.capacity[edges]) ** s.bpr_beta
        return net.freeflow_s[edges] * np.minimum(factor, s.max_slowdown)

    def _slot_mask(self, vehicles: np.ndarray) -> np.ndarray:
        """``(len, K)`` valid out-edge slots of deciding ``vehicles``: out-edges of their node,
        without the edge straight back unless it is the only way on (:func:`slot_mask`). The
        mask depends only on the edge a vehicle came by (its node is that edge's head) or, at
        its origin, on the node: one row of a table built at the first call."""
        if not vehicles.size:
            return np.zeros((0, self.k), dtype=bool)
        if self._mask_table is None:
            self._mask_table = mask_table(self.net, self.out_table)
        came = self.v_edge[vehicles]
        return self._mask_table[np.where(came >= 0, came, self.v_node[vehicles] + self._arrive)]

    def action_mask(self) -> np.ndarray:
        """``(n, K+1)`` bool: valid out-edge slots at decision points, else only the no-op."""
        mask = np.zeros((self.n, self.k + 1), dtype=bool)
        deciding, valid = self.deciding_mask()
        mask[deciding, : self.k] = valid
        mask[:, self.k] = self.status != AT_NODE
        return mask

    def deciding_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """``(deciding, valid)``: the learners at a decision point and their rows of
        :meth:`action_mask` without the no-op (what a policy needs, without the whole mask)."""
        deciding = (self.status == AT_NODE).nonzero()[0]
        return deciding, self._slot_mask(deciding)

    # ---- dynamics ---------------------------------------------------------------------------
    def step(self, actions: np.ndarray):
        """Advance one step. Returns ``(obs, reward, terminated, truncated)``, arrays of n."""
        reward, terminated, truncated = self.advance(actions)
        return self.observe(), reward, terminated, truncated

    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`step` without the observation: ``(reward, terminated, truncated)`` (the
        caller observes what it needs, e.g. ``observe(rows)``)."""
        s = self.scenario
        t1 = self.time_s + s.dt_s
        clock_before = self.clock_s[: self.n].copy()
        if self._idle(t1):  # nothing changes state in this step: only the clock moves on
            self.t += 1
            return self._rewards(clock_before, self._no_one)
        self._quiet_until = -np.inf
        self._decide(np.asarray(actions, dtype=np.int64))
        arrived = self._discharge(t1)
        ready = self._reach_stop_lines(t1)
        if self.queue_model and (self._held.size or ready.size):
            at = self._end_edge if ready.size else ready
            if self._held.size:  # (a held vehicle on an edge counts there: lone means alone)
                lone = self._held_still(t1) and not np.count_nonzero(self.count[at] != 1)
                if lone and at.size > 1:  # in the retry's order (records of traversals)
                    by = at.argsort()
                    ready, at = ready[by], at[by]
            else:
                lone = self._alone(at)
            if lone:
                more = self._leave_alone(ready, at, t1) if ready.size else ready
            else:  # space freed during the step lets held vehicles in, at t1
                retry = np.zeros(self.net.n_edges + 1, dtype=bool)  # index -1: origins
                retry[self.v_edge[self._held]] = True
                retry[at] = True
                more = self._discharge(t1, retry)
                if self._entered.size:  # the only vehicles on an edge not at its stop line
                    self._reach_stop_lines(t1, self._entered)
            if more.size:
                arrived = np.concatenate([arrived, more]) if arrived.size else more
        if arrived.size:
            self.n_arrived += arrived.size
            self.active = self.active[self.v_status[self.active] != ARRIVED]
        self.t += 1
        self._depart(t1)
        if self.record_queues:
            act = self.active
            waiting = act[(self.v_status[act] == QUEUED) | (self.v_status[act] == AT_NODE)]
            on = self.v_edge[waiting]
            self.queue_history.append(np.bincount(on[on >= 0], minlength=self.net.n_edges)
                                      .astype(np.int32))
        return self._rewards(clock_before, arrived)

    def _idle(self, t1: float) -> bool:
        """No vehicle changes state by ``t1``: none departs, decides, waits at a stop line or
        reaches one, and no queue is held (then :meth:`advance` would only move the clock;
        rewards are -0 for all, as the full step gives them). Sparse demand has many such
        steps. While every vehicle en route is driving, the first stop-line time among them
        (``_quiet_until``) says it until a step changes something."""
        if self._blocking or self._held.size or self.record_queues or \
                self._next_depart_s[self._departed] <= t1 + 1e-9:
            return False
        if t1 + 1e-9 < self._quiet_until:  # nothing changed since it was found
            return True
        act = self.active
        if np.count_nonzero(self.v_status[act] != ON_EDGE):
            return False
        self._quiet_until = float(self.ready_s[act].min()) if act.size else np.inf
        return t1 + 1e-9 < self._quiet_until

    def _rewards(self, clock_before: np.ndarray, arrived: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The step's ``(reward, terminated, truncated)``: minus the time each learner's clock
        advanced, the arrival bonus, and at the horizon the rest of the time and the
        penalty."""
        s, n = self.scenario, self.n
        reward = -(self.clock_s[:n] - clock_before) / s.time_scale_s
        terminated = np.zeros(n, dtype=bool)
        if arrived.size:
            now_arrived = arrived[arrived < n]
            terminated[now_arrived] = True
            reward[now_arrived] += s.arrival_bonus
        truncated = np.zeros(n, dtype=bool)
        if self.t >= self._n_steps:
            late = self.status != ARRIVED
            truncated[late] = True
            reward[late] -= (self.end_s - self.clock_s[:n][late]) / s.time_scale_s
            reward[late] -= s.timeout_penalty
            self.clock_s[:n][late] = self.end_s
        return reward, terminated, truncated

    def _decide(self, actions: np.ndarray) -> None:
        """Learners at a decision point take their chosen slot; background vehicles choose."""
        if self.compiled and self.scenario.background_choice == "shortest-path" and \
                self.dest_ids.size * self.net.n_nodes <= FF_MEMO_MAX:
            self._decide_compiled(actions)
            return
        act = self.active
        deciding = act[self.v_status[act] == AT_NODE]
        if deciding.size == 0:
            return
        split = int(deciding.searchsorted(self.n))
        learner, bg = deciding[:split], deciding[split:]
        slot = np.empty(deciding.size, dtype=np.int64)
        if learner.size:
            a = actions[learner]
            valid = self._slot_mask(learner)
            ok = (a >= 0) & (a < self.k)
            ok[ok] = valid[ok.nonzero()[0], a[ok]]
            if not ok.all():
                i = int(learner[~ok][0])
                raise InvalidActionError(f"agent {i} at node {int(self.v_node[i])} chose slot "
                                         f"{int(actions[i])}, which is masked; use action_mask()")
            slot[: learner.size] = a
        if bg.size:
            slot[learner.size:] = self._background_choice(bg)
        self.next_edge[deciding] = self.out_table[self.v_node[deciding], slot]
        self.v_status[deciding] = QUEUED
        came = self.v_edge[deciding]
        self.blocked_on[came[came >= 0]] = -1  # new heads?

    def _decide_compiled(self, actions: np.ndarray, active: np.ndarray | None = None) -> None:
        """:meth:`_decide` in :func:`relied.env.kernel.decide` (free-flow shortest-path
        background, its slots remembered as :meth:`_free_flow_slots` remembers them), of the
        vehicles ``active`` if given (none: nothing changes, the kernel is only loaded)."""
        if self._mask_table is None:
            self._mask_table = mask_table(self.net, self.out_table)
        if self._ff_slot is None and active is None:  # (-1: not computed yet)
            self._ff_slot = np.full(self.dest_ids.size * self.net.n_nodes, -1, dtype=np.int8)
        memo = np.full(1, -1, dtype=np.int8) if self._ff_slot is None else self._ff_slot
        net = self.net
        bad = decide(self.active if active is None else active, self.n, actions,
                     self._mask_table, self._arrive, self.v_status, self.v_node, self.v_edge,
                     self.out_table, self.next_edge, self._blocked_on, memo, self.v_dest_row,
                     net.n_nodes, net.freeflow_s, net.edge_dst, self.ff_to_dest)
        if bad >= 0:
            raise InvalidActionError(f"agent {bad} at node {int(self.v_node[bad])} chose slot "
                                     f"{int(actions[bad])}, which is masked; use action_mask()")

    def _background_choice(self, vehicles: np.ndarray) -> np.ndarray:
        """Free-flow shortest path, or a logit choice among the out-edges that bring the
        vehicle strictly closer (in free-flow time) to its destination, so it never loops."""
        if self.scenario.background_choice == "shortest-path":
            return self._free_flow_slots(vehicles)
        net = self.net
        slots = self.out_table[self.v_node[vehicles]]
        valid = slots >= 0
        se = np.where(valid, slots, 0)
        row = self.v_dest_row[vehicles]
        here = self.ff_to_dest[row, self.v_node[vehicles]]
        via = net.freeflow_s[se] + self.ff_to_dest[row[:, None], net.edge_dst[se]]
        best = np.where(valid, via, np.inf).argmin(axis=1)
        closer = valid & (self.ff_to_dest[row[:, None], net.edge_dst[se]] < here[:, None])
        closer[np.arange(vehicles.size), best] = True
        util = np.where(closer, -(via - here[:, None]) / self.scenario.logit_scale_s, -np.inf)
        p = np.exp(util - util.max(axis=1, keepdims=True))
        cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        u = self.bg_rng.random(vehicles.size)[:, None]
        return np.minimum((cum < u).sum(axis=1), self.k - 1)

    def _free_flow_slots(self, vehicles: np.ndarray) -> np.ndarray:
        """The out-edge slot on the free-flow shortest path of each of ``vehicles`` (any
        out-edge, the way back included; the first of equals). It depends only on the
        destination and the node: each pair is computed once per core and remembered (up to
        :data:`FF_MEMO_MAX` pairs)."""
        row, node = self.v_dest_row[vehicles], self.v_node[vehicles]
        pairs = self.dest_ids.size * self.net.n_nodes
        if pairs > FF_MEMO_MAX:
            return self._free_flow_choice(row, node)
        if self._ff_slot is None:  # (-1: not computed yet)
            self._ff_slot = np.full(pairs, -1, dtype=np.int8)
        key = row * self.net.n_nodes + node
        slot = self._ff_slot[key]
        new = slot < 0
        if np.count_nonzero(new):
            slot[new] = self._ff_slot[key[new]] = self._free_flow_choice(row[new], node[new])
        return slot

    def _free_flow_choice(self, row: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Slot minimising free-flow time to destination row ``row`` from ``node``."""
        slots = self.out_table[node]
        valid = slots >= 0
        se = np.where(valid, slots, 0)
        via = self.net.freeflow_s[se] + self.ff_to_dest[row[:, None], self.net.edge_dst[se]]
        return np.where(valid, via, np.inf).argmin(axis=1)

    def _discharge(self, t1: float, edges: np.ndarray | None = None) -> np.ndarray:
        """Move queued vehicles that can leave by ``t1`` into their next edge (or out of the
        network), only those on ``edges`` (a mask over edges, last entry: origins) if given.
        Returns the vehicles that arrived; ``self._held`` keeps those a full next edge held."""
        if self.queue_model and self.compiled:
            return self._discharge_compiled(t1, edges)
        act = self.active
        queued = self.v_status[act] == QUEUED
        if edges is not None:
            queued &= edges[self.v_edge[act]]
        q = act[queued]
        if self.queue_model:
            # in the step's first discharge every vehicle at a stop line has just decided
            # (none is AT_NODE), so ``stored`` equals ``count``
            self._recount = edges is not None
            return self._discharge_queues(q, t1)
        src, self._held = self.v_edge[q], q[:0]
        self._entered = q[:0]
        if q.size == 0:
            return q
        # FIFO per edge: by stop-line time, then vehicle id (q is ascending, the sort stable)
        order = (self._src_key[src] + self.ready_s[q]).argsort(kind="stable")
        q, src = q[order], src[order]
        depart = np.maximum(self.ready_s[q], self.clock_s[q])
        if self.signal_plan is not None:  # (leaving the network crosses no signal)
            depart = np.where(self.next_edge[q] < self._arrive,
                              self.signal_plan.next_green(src, depart), depart)
        go = depart <= t1 + 1e-9
        stay = q[~go]
        self.clock_s[stay] = np.maximum(self.clock_s[stay], t1)
        return self._move(q[go], depart[go], src[go], self.next_edge[q][go], t1)

    def _discharge_compiled(self, t1: float, edges: np.ndarray | None,
                            active: np.ndarray | None = None) -> np.ndarray:
        """:meth:`_discharge` of the queue model in the compiled kernel
        (:func:`relied.env.kernel.discharge_queues`: the numpy path's arithmetic, in order), of
        the vehicles ``active`` if given (none: nothing changes, the kernel is only loaded)."""
        self._recount = retried = edges is not None
        if self._kernel_state is None:  # the same arrays all episode (:meth:`reset`)
            self._kernel_state = self._kernel_arrays()
        (arrived, self._held, self._entered, src, go, slot, left, self._blocking, forced,
         v, d, from_edge, to, entered) = discharge_queues(
            self.active if active is None else active, edges if retried else self._none,
            retried, t1, retried, self._blocking, *self._kernel_state)
        self.forced += forced
        self._left = (src, go, slot, t1) if left else None
        if v.size and self.record_traversals:  # (what the numpy path's _move records)
            i = int(from_edge.searchsorted(0))
            self.traversals.append((v[i:], from_edge[i:], entered[i:], d[i:]))
        if self.record_routes and self._entered.size:
            e = to[to != self._arrive]
            learner = self._entered < self.n
            self.routes.append((self._entered[learner], e[learner]))
        return arrived

    def _kernel_arrays(self) -> tuple:
        """The arguments of :func:`relied.env.kernel.discharge_queues` after ``blocking``:
        the episode's state arrays (the same objects from :meth:`reset` on, updated in place)
        and the network's and signal plan's."""
        sig = self.signal_plan
        return (float(self.scenario.stuck_time_s), self.v_status, self.v_edge, self.v_node,
                self.next_edge, self.ready_s, self.entered_s, self.clock_s, self.head_since,
                self.v_arrival, self._count, self._next_slot, self._blocked_on,
                self.blocked_since, self.entries, self.traversal_s, self._src_key,
                self._headway, self._most, self.net.storage, self.net.freeflow_s,
                self.net.edge_dst, sig is not None,
                self._none if sig is None else sig.controlled,
                self._no_time if sig is None else sig.start_s,
                self._no_time if sig is None else sig.green_s,
                0.0 if sig is None else float(sig.cycle_s))

    def _discharge_queues(self, q: np.ndarray, t1: float) -> np.ndarray:
        """Queue model part of :meth:`_discharge` for queued ``q`` (ascending). Queues whose
        next discharge slot is after ``t1`` stay in the batch: their FIFO times are after
        ``t1`` too, so they stay like any vehicle that cannot leave yet (and do not count as
        left behind for :meth:`_alone`)."""
        self._stored = None  # (:meth:`_stored_now`)
        if self._blocking:  # some queue's head waits for a full edge: take those out
            q, src, self._held = self._gate(q, t1)
        else:
            src, self._held = self.v_edge[q], q[:0]
        if q.size == 0:
            self._entered = q
            self._left = None
            return q
        # FIFO per edge: by stop-line time, then vehicle id (q is ascending, the sort stable)
        order = (self._src_key[src] + self.ready_s[q]).argsort(kind="stable")
        q, src = q[order], src[order]
        slot = self._next_slot[src]
        everyone = self._cannot_leave(q, src, slot, t1)
        if everyone is not None:  # only the first few of long queues can leave: take those
            maybe = ~everyone[3]
            q, src, slot = q[maybe], src[maybe], slot[maybe]
        depart, behind = self._fifo(q, src, slot, t1)
        if self.signal_plan is not None:
            depart = self._wait_for_green(q, src, depart, t1)
        can = depart <= t1 + 1e-9
        target = self.next_edge[q]
        # Everyone who can leave does unless an entry may not fit (then within an edge a
        # later vehicle never leaves before an earlier one, departures being FIFO-chained).
        # Count the entries in; stored <= count, so an edge that then holds at most what it
        # can hold has room for all (leaving the network: index _arrive, never full).
        tgt = target[can]
        added = np.bincount(tgt, minlength=self._arrive + 1)[:-1]  # (last: leaving)
        self.count += added
        if np.count_nonzero(self._count[tgt] > self._most[tgt]):
            self.count -= added
            go = self._admit(q, src, target, depart, can, behind, t1)
            added, tgt = None, target[go]
        else:
            go = can
        leaving = q[go], depart[go], src[go]
        if everyone is not None:  # the bookkeeping below is of every queued vehicle
            q, src, slot, out = everyone
            went = np.zeros(q.size, dtype=bool)
            went[~out] = go
            go = went
        if self._recount:
            stay = q[~go]
            self.clock_s[stay] = np.maximum(self.clock_s[stay], t1)
        else:  # every clock is before t1 here (at most the step's start + 1e-9): those that
            self.clock_s[q] = t1  # stay are at t1, those that leave get their times below
        # a queue head whose slot is by t1 can leave (its clock is before t1): unless an
        # entry was refused, only vehicles behind a head stay with a slot by t1
        self._left = None if added is not None and behind is None and everyone is None \
            and self.signal_plan is None else (src, go, slot, t1)  # (a red light leaves
        return self._move(*leaving, tgt, t1, added, self._one_each)  # queue heads behind)

    def _cannot_leave(self, q: np.ndarray, src: np.ndarray, slot: np.ndarray,
                      t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                          np.ndarray] | None:
        """Queue model: which of queued ``q`` (sorted FIFO by edge ``src``; ``slot``: the
        edge's next discharge slot) cannot leave by ``t1`` whatever happens: the j-th of its
        queue leaves at ``slot + j headway`` at the earliest (the bound of :meth:`_fifo`'s
        closed form, in its arithmetic). Returns ``(q, src, slot, mask)``, or ``None`` where
        that is under half of them (then they are not worth taking out). Those behind in a
        queue follow those ahead, so the others are the first few of each queue: their
        times are those the whole queue gives them."""
        if q.size < 64:
            return None
        idx = np.arange(q.size)
        out = (idx - _segment_starts(src)) * self._headway[src] + slot > t1 + 1e-9
        if 2 * np.count_nonzero(out) < q.size:
            return None
        return q, src, slot, out

    def _move(self, v: np.ndarray, d: np.ndarray, from_edge: np.ndarray, to: np.ndarray,
              t1: float, added: np.ndarray | None = None, one_each: bool = False) -> np.ndarray:
        """Vehicles ``v`` leave ``from_edge`` (ascending; -1: their origin) at ``d`` into ``to``
        (or out of the network; ``added``: entries per edge already added to ``count``;
        ``one_each``: at most one from each edge, queue model). Returns those that arrived."""
        net = self.net
        self._entered = v[:0]
        if v.size == 0:
            return v
        i = int(from_edge.searchsorted(0))  # origins first
        vc, fe, dc = (v[i:], from_edge[i:], d[i:]) if i else (v, from_edge, d)
        self.blocked_on[fe] = -1
        if one_each:  # plain indexing does what ufunc.at does; d >= next slot (FIFO)
            self.next_slot[fe] = dc + self.headway[fe]
            self.count[fe] -= 1
            self.traversal_s[fe] += dc - self.entered_s[vc]
        else:
            if self.queue_model:
                np.maximum.at(self.next_slot, fe, dc + self.headway[fe])
            np.subtract.at(self.count, fe, 1)
            np.add.at(self.traversal_s, fe, dc - self.entered_s[vc])
        if self.record_traversals:
            self.traversals.append((vc, fe, self.entered_s[vc], dc))
        self.clock_s[v] = d
        self.head_since[v] = np.nan
        self.next_edge[v] = -1
        out = to == self._arrive
        gone = v[out]
        if gone.size:
            self.v_status[gone] = ARRIVED
            self.v_arrival[gone] = d[out]
            self.v_edge[gone] = -1
            if gone.size == v.size:
                return gone
            stay = ~out
            v, d, to = v[stay], d[stay], to[stay]
        mv, dm, e = v, d, to
        self._entered = mv
        if self.queue_model:
            t_edge = net.freeflow_s[e]
        else:
            t_edge = self._bpr_time(e, np.maximum(self.count[e], 0))
        if added is None:
            np.add.at(self.count, e, 1)
            np.add.at(self.entries, e, 1)
        else:
            self.entries += added
        self.v_status[mv] = ON_EDGE
        self.v_edge[mv] = e
        self.v_node[mv] = net.edge_dst[e]
        self.entered_s[mv] = dm
        ready = dm + t_edge
        self.ready_s[mv] = ready
        self.clock_s[mv] = np.minimum(ready, t1)
        if self.record_routes:
            learner = mv < self.n
            self.routes.append((mv[learner], e[learner]))
        return gone

    def _alone(self, e: np.ndarray) -> bool:
        """Queue model, after the step's discharge: is each vehicle just at the stop line of
        its destination's edge (on edges ``e``) the only vehicle queued on its edge? Those
        still queued are the ones the discharge left (``_left``: FIFO-sorted edges, left
        behind, slots) but not those of queues whose slot is after the step (they were no
        candidates), and those a full edge held."""
        if self._left is None:  # nobody left behind by a queue whose slot is by t1
            if e.size == 1:
                return True
            e = np.sort(e)
            return not np.count_nonzero(e[1:] == e[:-1])
        if not np.count_nonzero(self.count[e] != 1):  # nobody else on these edges
            return True
        src, go, slot, t1 = self._left
        stay_src = src[(slot <= t1 + 1e-9) & ~go]
        if e.size == 1:
            return not np.count_nonzero(stay_src == e[0])
        on = np.bincount(e, minlength=self.net.n_edges + 1)  # index -1: origins
        on[stay_src] += 1
        return not np.count_nonzero(on[e] > 1)

    def _held_still(self, t1: float) -> bool:
        """Queue model, after a discharge that held vehicles: would the retry hold them all
        again? True where each waits in a queue on an edge bound to a full edge (so the
        retry's gate takes the queue out), not for the stuck time yet, and that edge stays
        full even without every vehicle just at its stop line (those are the only ones
        :attr:`stored` may leave out). A sufficient condition: False sends to the retry."""
        if self.compiled:  # (:func:`relied.env.kernel.held_still`: the same answer)
            return held_still(self._held, self._mid, t1, float(self.scenario.stuck_time_s),
                              self.v_edge, self._blocked_on, self.blocked_since, self._count,
                              self.net.storage)
        on = self.v_edge[self._held]
        w = self._blocked_on[on]  # index -1 (origins): never bound
        if np.count_nonzero(w < 0):
            return False
        if np.count_nonzero(t1 - self.blocked_since[on] < self.scenario.stuck_time_s) < on.size:
            return False
        at_stop = np.bincount(self.v_edge[self._mid], minlength=self.net.n_edges)[w]
        return not np.count_nonzero(self.count[w] - at_stop < self.net.storage[w])

    def _leave_alone(self, v: np.ndarray, e: np.ndarray, t1: float) -> np.ndarray:
        """Queue model: vehicles ``v`` alone in their edge's (``e``) queue at their destination
        leave at ``max(stop-line time, the edge's next discharge slot)`` if that is by ``t1``
        (what the discharge of one-vehicle queues gives). Returns those that arrived."""
        if v.size == 1:  # the usual case: on scalars
            return self._leave_alone_one(v, e, t1)
        d = np.maximum(self.next_slot[e], self.ready_s[v])
        go = d <= t1 + 1e-9
        if np.count_nonzero(go) < go.size:
            stay = v[~go]
            self.clock_s[stay] = np.maximum(self.clock_s[stay], t1)
            v, d, e = v[go], d[go], e[go]
        # one vehicle per edge: plain indexing does what the general move's ufunc.at does
        # (d >= next slot, so d + headway is the new one; blocked_on was cleared as they
        # reached the stop line; head_since is NaN for a vehicle that was on an edge)
        self.next_slot[e] = d + self.headway[e]
        self.count[e] -= 1
        self.traversal_s[e] += d - self.entered_s[v]
        if self.record_traversals:
            self.traversals.append((v, e, self.entered_s[v], d))
        self.clock_s[v] = d
        self.next_edge[v] = -1
        self.v_status[v] = ARRIVED
        self.v_arrival[v] = d
        self.v_edge[v] = -1
        return v

    def _leave_alone_one(self, v: np.ndarray, e: np.ndarray, t1: float) -> np.ndarray:
        """:meth:`_leave_alone` of one vehicle, the same arithmetic on scalars."""
        i, k = v[0], e[0]
        slot, ready = self.next_slot[k], self.ready_s[i]
        d = slot if slot >= ready else ready
        if not d <= t1 + 1e-9:
            if self.clock_s[i] < t1:
                self.clock_s[i] = t1
            v, e = v[:0], e[:0]
            if self.record_traversals:
                self.traversals.append((v, e, self.entered_s[v], self.entered_s[v]))
            return v
        self.next_slot[k] = d + self.headway[k]
        self.count[k] -= 1
        self.traversal_s[k] += d - self.entered_s[i]
        if self.record_traversals:
            self.traversals.append((v, e, self.entered_s[v], np.array([d])))
        self.clock_s[i] = d
        self.next_edge[i] = -1
        self.v_status[i] = ARRIVED
        self.v_arrival[i] = d
        self.v_edge[i] = -1
        return v

    def _gate(self, q: np.ndarray, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Queue model, while some queue's head waits for a full edge: take out of queued
        ``q`` the queues whose head waits for an edge that is still full and has not waited
        the stuck time. Returns ``(the others, their edges, held by a full edge)``."""
        e = self.v_edge[q]
        full = self._blocked_on[e] >= 0
        if not np.count_nonzero(full):  # (count_nonzero: cheaper than any() on small arrays)
            if not np.count_nonzero(self.blocked_on >= 0):
                self._blocking = False
            return q, e, q[:0]
        i = full.nonzero()[0]
        w = self._blocked_on[e[i]]
        full[i] = (self.count[w] >= self.net.storage[w]) & \
            (t1 - self.blocked_since[e[i]] < self.scenario.stuck_time_s)
        if self._recount and np.count_nonzero(full[i]):  # stored <= count
            i = i[full[i]]
            w = self._blocked_on[e[i]]
            full[i] = self._stored_now()[w] >= self.net.storage[w]
        if not np.count_nonzero(full):
            return q, e, q[:0]
        re_held = e[full]
        self.next_slot[re_held] = np.maximum(self.next_slot[re_held], t1)
        held = q[full]
        if self._recount:
            self.clock_s[held] = np.maximum(self.clock_s[held], t1)
        else:  # (every clock is before t1 in the step's first discharge)
            self.clock_s[held] = t1
        keep = ~full
        return q[keep], e[keep], held

    def _fifo(self, q: np.ndarray, src: np.ndarray, slot: np.ndarray,
              t1: float) -> tuple[np.ndarray, tuple[int, np.ndarray] | None]:
        """Queue model: discharge times of queued ``q`` sorted FIFO by edge (``src``, -1:
        origins; ``slot``: the edge's next discharge slot), ``d_j = max(ready_j, d_{j-1} +
        headway)`` from the slot, in closed form ``j h + max(slot, max_{i <= j} (ready_i -
        i h))`` with an exact per-edge running maximum (``inf`` for those behind a queue's
        head when only heads can leave by ``t1``), and not before the vehicle's clock (a
        queued vehicle's clock is at least its stop-line time). Vehicles at their origin (no
        headway, sorted by ready time) each leave at their ready time, so each is taken as a
        queue of its own. Returns the times and which vehicles are behind another of their
        queue, ``(k, mask of those from index k)`` (``None``: one per queue)."""
        depart = np.maximum(slot, self.clock_s[q])
        self._one_each = True  # at most one vehicle of each queue can leave by t1
        k = int(src.searchsorted(0)) + 1  # origins (src -1) sort first
        if k >= src.size:
            return depart, None
        behind = src[k:] == src[k - 1:-1]
        if not np.count_nonzero(behind):
            return depart, None
        # d_j >= slot + j h: if no queue's second vehicle can leave by t1 (then no later one
        # can), only queue heads can, and the others need no time
        second = slot[k:] + self._headway[src[k:]]
        if not np.count_nonzero(second[behind] <= t1 + 1e-9):
            depart[k:][behind] = np.inf
            return depart, (k, behind)
        self._one_each = False
        start = _heads(src.size, (k, behind))
        idx = np.arange(src.size)
        first = np.maximum.accumulate(np.where(start, idx, 0))
        jh = (idx - first) * self._headway[src]
        b = self.ready_s[q] - jh
        # running maximum of b restarted on each edge, on integer ranks (no rounding)
        by_b = b.argsort(kind="stable")
        rank = np.empty(src.size, dtype=np.int64)
        rank[by_b] = idx
        offset = first * src.size
        top = np.maximum.accumulate(offset + rank) - offset
        return np.maximum(jh + np.maximum(slot, b[by_b[top]]), self.clock_s[q]), (k, behind)

    def _wait_for_green(self, q: np.ndarray, src: np.ndarray, depart: np.ndarray,
                        t1: float) -> np.ndarray:
        """Signals on: the FIFO discharge times ``depart`` of queued ``q`` (sorted FIFO by edge
        ``src``) with each vehicle crossing a signal waiting for green, ``d_j = green(max(
        ready_j, d_{j-1} + headway, clock_j))`` down each controlled queue; a vehicle leaving the
        network at the stop line waits only for the one ahead. Only vehicles that could leave
        by ``t1`` without the lights are recomputed (a light only delays, so the others stay
        after ``t1``); they are the first few of their queue, and only while the one ahead
        leaves by ``t1`` (behind one that does not, a vehicle cannot either: its time is set
        to ``inf``, since only whether it is by ``t1`` is read)."""
        cand = (self.signal_plan.controlled[src] & (depart <= t1 + 1e-9)).nonzero()[0]
        if cand.size == 0:
            return depart
        depart = depart.copy()
        e = src[cand]
        crosses = self.next_edge[q[cand]] < self._arrive
        green = self.signal_plan.green_from
        if not np.count_nonzero(e[1:] == e[:-1]):  # one vehicle per queue: all heads
            t = depart[cand]
            depart[cand] = np.where(crosses, green(e, t), t)
            return depart
        rank = np.arange(cand.size) - _segment_starts(e)
        for r in range(int(rank.max()) + 1):
            at = rank == r
            i = cand[at]
            if r:  # behind a vehicle of its own queue: the chain from that one's time
                ahead = depart[i - 1] <= t1 + 1e-9
                if not np.count_nonzero(ahead):  # nobody ahead leaves: neither they nor
                    depart[cand[rank >= r]] = np.inf  # those behind them can (their times
                    break  # are after t1; only that is read of them)
                depart[i[~ahead]] = np.inf
                at[at] = ahead
                i = i[ahead]
                v = q[i]
                t = np.maximum(np.maximum(self.ready_s[v], depart[i - 1] + self._headway[e[at]]),
                               self.clock_s[v])
            else:
                t = depart[i]
            depart[i] = np.where(crosses[at], green(e[at], t), t)
        return depart

    def _admit(self, q: np.ndarray, src: np.ndarray, target: np.ndarray, depart: np.ndarray,
               can: np.ndarray, behind: tuple[int, np.ndarray] | None,
               t1: float) -> np.ndarray:
        """Queue model: which of the FIFO-ordered ``q`` (those that ``can`` leave by ``t1``)
        leave. Those entering an edge take its free storage first come first served; a vehicle
        the next edge holds holds the ones behind it on its edge; after ``stuck_time_s`` at a
        queue's head a vehicle enters anyway. Updates the bookkeeping of held queues. Called
        where counting the entries in found an edge over its storage."""
        entering = can & (target < self._arrive)
        tgt = target[entering]
        entries = np.bincount(tgt, minlength=self.net.n_edges)[tgt]
        room = self.net.storage[tgt] - (self._stored_now()[tgt] if self._recount
                                        else self.count[tgt])
        if not np.count_nonzero(entries > room):
            return can
        leaving = target == self._arrive
        tq = entering.nonzero()[0]
        # someone may not fit: rank the entries per edge, first come first served
        by = np.lexsort((q[tq], depart[tq], tgt))
        rank = np.arange(tq.size) - _segment_starts(tgt[by])
        fits = np.zeros(q.size, dtype=bool)
        fits[tq[by]] = rank < room[by]
        stuck = can & ~leaving & (t1 - self.head_since[q] >= self.scenario.stuck_time_s)
        ok = can & (leaving | fits | stuck)
        on_edge = src >= 0
        idx = np.arange(q.size)
        if behind is None:  # one vehicle per queue
            first, start = idx, np.ones(q.size, dtype=bool)
        else:
            start = _heads(q.size, behind)
            first = np.maximum.accumulate(np.where(start, idx, 0))
        # a queue moves up to its first vehicle that cannot; origins one by one
        nok = ~ok
        blocked = nok.cumsum()
        go = on_edge & (blocked - (blocked[first] - nok[first]) == 0)
        go |= ~on_edge & ok
        self.forced += int(np.count_nonzero(go & stuck & ~fits))
        held = can & ~go  # could leave but the next edge is full (or the one ahead is held)
        if np.count_nonzero(held):
            qh = q[held & start | held & ~on_edge]
            since = self.head_since[qh]
            self.head_since[qh] = np.where(np.isnan(since), t1, since)
            self._held = np.concatenate([self._held, q[held]])
            held_head = held & on_edge & start
            blocked_edges = src[held_head]
            self.next_slot[blocked_edges] = np.maximum(self.next_slot[blocked_edges], t1)
            self.blocked_on[blocked_edges] = target[held_head]
            self._blocking = True
            self.blocked_since[blocked_edges] = self.head_since[q[held_head]]
        return go

    def _reach_stop_lines(self, t1: float, among: np.ndarray | None = None) -> np.ndarray:
        """Vehicles whose free-flow traversal ends by ``t1`` are at the stop line: they decide
        next (or, at their destination's edge, queue to leave the network: returned). Only
        ``among`` those vehicles (on an edge) if given."""
        if self.compiled:  # (:func:`relied.env.kernel.reach_stop_lines`: the same updates)
            end, self._mid, end_edge = reach_stop_lines(
                self.active if among is None else among, among is None, t1, self.v_status,
                self.ready_s, self.clock_s, self.v_node, self.v_dest, self.v_edge,
                self.next_edge, self._blocked_on, self._arrive)
            if end.size or self._mid.size:
                self._end_edge = end_edge
            return end
        if among is None:
            act = self.active
            on = act[(self.v_status[act] == ON_EDGE) & (self.ready_s[act] <= t1 + 1e-9)]
        else:
            on = among[self.ready_s[among] <= t1 + 1e-9]
        if on.size == 0:
            self._mid = on
            return on
        self.clock_s[on] = self.ready_s[on]
        last = self.v_node[on] == self.v_dest[on]
        end, mid = on[last], on[~last]
        self.v_status[end] = QUEUED
        self.next_edge[end] = self._arrive
        self._end_edge = end_edge = self.v_edge[end]
        self.blocked_on[end_edge] = -1  # possibly a new head, bound nowhere full
        self.v_status[mid] = AT_NODE
        self._mid = mid
        return end

    # ---- observation ------------------------------------------------------------------------
    def decision_node(self) -> np.ndarray:
        """The node where each learner decides next (its edge's head, or its origin)."""
        return self.node

    def observe(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``(n, obs_dim)`` observation of every learner, or ``(len(rows), obs_dim)`` of the
        learners ``rows`` only (equal to those rows of the full one; the fast trainer builds
        the deciding learners' rows alone)."""
        net, s = self.net, self.scenario
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        m = len(rows)
        node, dest_row, status = self.node[rows], self.dest_row[rows], self.status[rows]
        slots = self.out_table[node]
        valid = self._slot_mask(rows)  # the mask at each learner's next node
        se = np.where(valid, slots, 0)
        togo = self.ff_to_dest[dest_row, node]
        via = net.freeflow_s[se] + self.ff_to_dest[dest_row[:, None], net.edge_dst[se]]
        best = np.where(valid, via, np.inf).min(axis=1)
        to_dest = self.xy[self.dest[rows]] - self.xy[node]
        dist = np.linalg.norm(to_dest, axis=1)
        unit = to_dest / np.maximum(dist, 1e-9)[:, None]
        obs = np.empty((m, self.obs_dim), dtype=np.float32)
        obs[:, 0] = status == AT_NODE
        obs[:, 1] = min(self.time_s / s.horizon_s, 1.0)
        obs[:, 2] = togo / 600.0
        obs[:, 3] = dist / 1000.0
        per = obs[:, GLOBAL_FEATURES:].reshape(m, self.k, SLOT_FEATURES)
        per[:, :, 0] = valid
        per[:, :, 1] = (via - best[:, None]) / 60.0
        per[:, :, 2] = self.edge_delay()[se] / 60.0
        per[:, :, 3] = self.count[se] / net.storage[se]
        per[:, :, 4] = net.freeflow_s[se] / 60.0
        per[:, :, 5] = np.einsum("nkd,nd->nk", self.edge_dir[se], unit)
        per[:, :, 6] = self._live_detour(se, valid, status == AT_NODE, rows) / 60.0
        per[~valid] = 0.0
        obs[status == ARRIVED, 1:] = 0.0
        np.clip(obs, OBS_LOW, OBS_HIGH, out=obs)
        return obs

    def live_to_go(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cost, to_go, row_of)`` on current entering travel times (:class:`LiveCostToGo`),
        computed once per step and shared by the observation and the congestion-aware
        policy."""
        return self._live.get(self.t, self.edge_travel_time, self.dest,
                              np.flatnonzero(self.status == AT_NODE))

    def live_best_slots(self, deciding: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """For ``deciding`` learners (with their ``valid`` slots), the slot minimising the
        entering travel time of its edge plus the live cost-to-go from its head: the choice
        :meth:`live_to_go`'s rows give, bounded below by the cost-to-go on the step's
        :meth:`_cost_floor` where that settles it (:meth:`LiveCostToGo.best_slots`)."""
        edges = np.maximum(self.out_table[self.node[deciding]], 0)
        floor = self._cost_floor()
        rows = floor.row[self.dest[deciding]]
        lower = floor.table[rows[:, None], self.net.edge_dst[edges]]
        return self._live.best_slots(self.t, self.edge_travel_time, self.dest, deciding,
                                     edges, valid, lower, floor, rows)

    def _cost_floor(self) -> CostFloor:
        """The :class:`CostFloor` of this step's edge costs: free flow plus the mean red wait
        with signals (the queue model's delay includes it; built at the first call, for the
        learners' destinations) while every cost is at least that, else free flow."""
        if self._floors is None:
            self._floors = [CostFloor.build(self.net, self.net.freeflow_s, self.dest_ids,
                                            self.ff_to_dest)]
            if self.signal_plan is not None and self.queue_model:
                weights, dests = self.net.freeflow_s + self._red_wait, np.unique(self.dest)
                self._floors.insert(0, CostFloor.build(self.net, weights, dests,
                                                       self._live.rows(dests, weights)[0]))
        for floor in self._floors[:-1]:
            if self._live.holds(self.t, self.edge_travel_time, floor):
                return floor
        return self._floors[-1]

    def _live_detour(self, se: np.ndarray, valid: np.ndarray, at_node: np.ndarray,
                     rows: np.ndarray) -> np.ndarray:
        """``(len(rows), K)`` seconds each slot loses against the best one on current entering
        travel times, for the learners ``rows`` at a decision point (``at_node``; 0
        elsewhere)."""
        out = np.zeros(se.shape)
        if not np.any(self.status == AT_NODE):
            return out
        cost, to_go, row_of = self.live_to_go()  # asked whatever the rows: its cache advances
        deciding = np.flatnonzero(at_node)  # as with the full observation
        if deciding.size == 0:
            return out
        e = se[deciding]
        via = cost[e] + to_go[row_of[rows[deciding]][:, None], self.net.edge_dst[e]]
        ok = valid[deciding]
        best = np.where(ok, via, np.inf).min(axis=1, keepdims=True)
        gap = via - best
        out[deciding] = np.where(ok, np.where(np.isfinite(gap), gap, 600.0), 0.0)
        return out

    # ---- metrics ----------------------------------------------------------------------------
    def travel_times(self, background: bool = False) -> np.ndarray:
        """Travel time of each learner (or background vehicle); trips not finished are
        censored at the current time (the horizon, at the end of an episode)."""
        sl = slice(self.n, None) if background else slice(0, self.n)
        arrival, depart = self.v_arrival[sl], self.v_depart[sl]
        end = np.where(np.isnan(arrival), self.time_s, arrival)
        return np.maximum(end - depart, 0.0)

    def metrics(self) -> dict[str, float | None]:
        """Learners' episode metrics (``None`` where undefined), and the background's."""
        tt = self.travel_times()
        arrived = self.status == ARRIVED
        out: dict[str, float | None] = {
            "mean_travel_time": float(tt.mean()),
            "p95_travel_time": float(np.percentile(tt, 95)),
            "mean_travel_time_arrived": float(tt[arrived].mean()) if arrived.any() else None,
            "arrival_rate": float(arrived.mean()),
            "mean_freeflow_time": float(self.ff_od.mean()),
            "total_delay": float(np.maximum(tt - self.ff_od, 0.0).sum()),
            "delay_ratio": float(tt.mean() / self.ff_od.mean() - 1.0),
            "forced_entries": float(self.forced),
        }
        if self.n_all > self.n:
            btt = self.travel_times(background=True)
            out["background_vehicles"] = float(self.n_all - self.n)
            out["background_mean_travel_time"] = float(btt.mean())
            out["background_arrival_rate"] = float((self.v_status[self.n:] == ARRIVED).mean())
        return out

    def edge_slowdown(self) -> np.ndarray:
        """Mean experienced traversal time / free-flow time of each edge (NaN if unused)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.traversal_s / self.traversal_n / self.net.freeflow_s

    def agent_routes(self) -> list[list[int]]:
        """Node sequence driven by each learner (needs ``record_routes=True``)."""
        routes = [[int(o)] for o in self.origin]
        for agents, edges in self.routes:
            for i, e in zip(agents.tolist(), edges.tolist(), strict=True):
                routes[i].append(int(self.net.edge_dst[e]))
        return routes
