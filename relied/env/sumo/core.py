"""A :class:`RoutingCore` whose traffic is simulated by SUMO (libsumo, in process).

:class:`SumoCore` keeps the core's interface (``status``, ``node``, ``action_mask()``,
``observe()``, ``edge_travel_time()``, ``step()``, ``metrics()``, ...), so every reference
policy and every trained policy runs on it unchanged, and it inherits the core's observation
code: only the state it reads comes from SUMO.

* Demand: the Scenario's learners and background vehicles, same ODs and departures. Background
  vehicles get their whole route at insertion (free-flow shortest path, or the core's logit
  choice sampled junction by junction), as fragments of the core's edges.
* Decisions: a learner decides at its next core junction (or at its origin, before it is
  inserted) as soon as that junction is within :data:`LOOKAHEAD_STEPS` steps of driving at
  the network's top speed from the end of the SUMO edge it is on (or when it is on the last
  SUMO edge before it). Its choice is applied at once with ``vehicle.setRoute`` (the route
  it has up to that junction + the chosen core edge's fragment + SUMO's fastest way on to
  the destination), so SUMO knows it before the vehicle gets there; the following junction
  is then next, so on short edges a learner decides several junctions ahead, one per step.
  Slots that SUMO cannot drive (no connection, destination unreachable) are masked. A
  junction a learner passes undecided (a teleport, or a chain of more sub-step edges than
  the lookahead covers, e.g. right after insertion) is a ``missed_decision``; SUMO's route
  stands there.
* State: the ``delay`` of a core edge is SUMO's current travel time of its fragment minus
  SUMO's free-flow time (``edge.getTraveltime``); ``count`` (the observation's fill) is the
  vehicles on the fragment.
* Metrics: the core's keys; trip times run from the Scenario's departure to SUMO's arrival
  (insertion delay included). SUMO's teleports (a vehicle stuck for ``time_to_teleport_s`` is
  moved on) are counted, never dropped: ``teleports``, ``teleported_learners``.
  A vehicle SUMO removes without arriving stays unarrived (censored at the horizon) and is
  counted in ``removed_vehicles``. ``teleports`` comes from SUMO's statistics
  (``stats.teleports.total``), as meso does not list its teleports to TraCI;
  ``teleported_learners`` are the learners in micro's teleport lists or, in meso, seen off
  any edge between insertion and arrival at the end of a step (a meso teleport that lands
  within the step it starts in goes unattributed).
* Signals: SUMO runs netconvert's traffic-light programs (``signal_plans="netconvert"``, the
  default); with ``Scenario.signals`` on, ``signal_plans="core"`` runs the core's fixed-time
  plans in their place (:mod:`relied.env.sumo.signals`; what they do not cover is in
  ``program_report``). Not the default: on monaco-peak they add SUMO teleports (micro 98 / 37
  -> 124 / 97, meso congestion-aware 1 -> 6; benchmarks/results/backends_core_signals_monaco.md):
  queues spill back from lights whose approach the core greens as a whole, where netconvert
  keeps a conflict-free turn green or protects a left turn (benchmarks/results/sumo_teleports.md).
* Junctions in meso (``meso_junctions``, :data:`MESO_JUNCTIONS`): ``"control"`` (the default)
  runs SUMO's junction control (``--meso-junction-control``: vehicles wait for the actual
  signal phase and give way to foes at priority junctions and on permissive green, SUMO's
  right-of-way model). ``"green-split"`` runs the core's junction model in SUMO, through
  SUMO's own documented options: no junction control (SUMO meso's default) and
  ``--meso-tls-flow-penalty 1``, which discharges each signalised link at its queue's
  headway divided by the link's green fraction (the non-red share of the cycle;
  ``MSTrafficLightLogic::initMesoTLSPenalties``, ``MESegment::send``), without looking at
  the phase or at foes; the core discharges an approach at saturation flow times its green
  share, with no conflicts either. A comparison row of the same link model with the junction
  model held equal (benchmarks/backends.py, ``sumo-meso-split``); not a reference for SUMO's
  own junction behaviour.

libsumo runs one simulation per process: a new reset closes the simulation of any other
:class:`SumoCore` in the process (use one process per env worker).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from relied.env.core import (
    ARRIVED,
    AT_NODE,
    ON_EDGE,
    QUEUED,
    WAITING,
    InvalidActionError,
    RoutingCore,
)
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario
from relied.env.sumo.network import SumoError, SumoNetwork

Mode = Literal["micro", "meso"]
MesoJunctions = Literal["control", "green-split"]
#: SUMO meso's junction model (``SumoCore(meso_junctions=...)``; the module doc, "Junctions in
#: meso"), as options of its command
MESO_JUNCTIONS: dict[str, tuple[str, ...]] = {
    "control": ("--meso-junction-control", "true"),
    "green-split": ("--meso-tls-flow-penalty", "1"),
}
SignalPlans = Literal["core", "netconvert"]
#: Where SUMO's traffic-light programs come from (see the module doc, "Signals").
SIGNAL_PLANS: tuple[str, ...] = ("core", "netconvert")
MODES: tuple[str, ...] = ("micro", "meso")
_ACTIVE: list[SumoCore] = []

#: steps of driving at the network's top speed within which a learner decides at its next
#: junction (docs/sumo.md, "Decisions")
LOOKAHEAD_STEPS = 4

#: SUMO options of every run besides the Scenario's, each with why (docs/environment.md, "SUMO").
SIM_OPTIONS: tuple[str, ...] = (
    # a vehicle standing on a junction for 10 s no longer blocks the others' foes: the
    # usual cure for the deadlocks micro builds at busy unsignalised OSM junctions (on
    # aguascalientes 1,000 trips: 76% -> 82% arrive, 138 -> 109 teleports)
    "--ignore-junction-blocker", "10",
    # a collision (rare, mostly from the junction-blocker rule) is reported and both
    # vehicles drive on: none leaves the metrics; counted in ``collisions``
    "--collision.action", "warn",
    # vehicles whose route SUMO cannot drive stay in the run and are counted, never dropped
    "--ignore-route-errors", "true",
    "--no-step-log", "true", "--no-warnings", "true", "--duration-log.disable", "true",
)


def _libsumo():
    try:
        import libsumo
    except ImportError:
        raise SumoError("SUMO is not installed: pip install 'relied[sumo]'") from None
    return libsumo


class SumoCore(RoutingCore):
    """The Scenario in SUMO micro (``mode="micro"``) or mesoscopic (``"meso"``) simulation."""

    def __init__(self, net: CityNetwork, scenario: Scenario, sumo_net: SumoNetwork,
                 mode: Mode = "micro", record_routes: bool = False,
                 time_to_teleport_s: float = 300.0, signals: bool = True,
                 signal_plans: SignalPlans = "netconvert",
                 meso_junctions: MesoJunctions = "control"):
        if mode not in MODES:
            raise ValueError(f"unknown SUMO mode '{mode}'; choose micro or meso")
        if meso_junctions not in MESO_JUNCTIONS:
            raise ValueError(f"unknown meso junction model '{meso_junctions}'; choose "
                             f"{' or '.join(MESO_JUNCTIONS)}")
        if signal_plans not in SIGNAL_PLANS:
            raise ValueError(f"unknown signal plans '{signal_plans}'; choose core or netconvert")
        if sumo_net.net is not net:
            raise ValueError("the SumoNetwork was mapped onto another CityNetwork")
        self.traci = _libsumo()
        self.sumo_net, self.mode = sumo_net, mode
        self.time_to_teleport_s = time_to_teleport_s
        #: ``False``: SUMO's traffic lights switched off (``--tls.all-off``; a diagnostic:
        #: the core has no signals, see docs/environment.md, "SUMO")
        self.signals = signals
        self.signal_plans = signal_plans
        self.meso_junctions = meso_junctions
        #: what the core's plans cover of SUMO's traffic lights (set at reset when they run)
        self.program_report = None
        #: a learner decides at its next junction once it could reach it within
        #: ``LOOKAHEAD_STEPS`` steps at the network's top speed
        self.reach_m = LOOKAHEAD_STEPS * scenario.dt_s * float(sumo_net.speed.max())
        self.running = False
        super().__init__(net, scenario, record_routes=record_routes)

    def _load_kernels(self) -> None:
        """None at construction: SUMO moves the vehicles (the core's compiled discharge never
        runs here), and the live cost-to-go's kernels load at their first use, if a policy
        or an observation asks for it (~0.2 s once per process, the first numba load)."""

    # ---- SUMO process -------------------------------------------------------------------------
    def _command(self) -> list[str]:
        from relied.env.sumo.network import require_sumo

        s = self.scenario
        cmd = [f"{require_sumo().SUMO_HOME}/bin/sumo", "-n", str(self.sumo_net.path),
               "--begin", "0", "--end", str(self.end_s), "--step-length", str(s.dt_s),
               "--seed", str(s.seed % 2**31), "--time-to-teleport", str(self.time_to_teleport_s),
               *SIM_OPTIONS]
        if self.mode == "meso":
            cmd += ["--mesosim", "true", *MESO_JUNCTIONS[self.meso_junctions]]
        if not self.signals:
            cmd += ["--tls.all-off", "true"]
        return cmd

    def close(self) -> None:
        """End this core's SUMO simulation (if it is the running one)."""
        if self.running and _ACTIVE and _ACTIVE[0] is self:
            self.traci.close()
            _ACTIVE.clear()
        self.running = False

    def _start(self) -> None:
        if _ACTIVE:
            _ACTIVE[0].close()
        try:
            self.traci.start(self._command())
        except self.traci.TraCIException as exc:
            raise SumoError(f"SUMO did not start on '{self.sumo_net.path}' ({exc})") from None
        _ACTIVE.append(self)
        self.running = True
        if self.signals and self.signal_plans == "core" and self.signal_plan is not None:
            from relied.env.sumo.signals import apply_core_programs

            self.program_report = apply_core_programs(self.traci, self.sumo_net,
                                                      self.signal_plan)
        self._subscribed = np.flatnonzero(self.sumo_net.sumo_to_core >= 0)
        self.sumo_edges = [self.sumo_net.edge_ids[s] for s in self._subscribed]
        for s in np.flatnonzero(self.sumo_net.sumo_to_core >= 0).tolist():
            self.traci.edge.setMaxSpeed(self.sumo_net.edge_ids[s], float(self.sumo_net.speed[s]))
        # the edges' state is subscribed to when first read (a policy that reads neither the
        # observation nor edge delays, e.g. shortest-path, never pays for it; as in the core)
        self._edges_read = False

    def _subscribe_edges(self) -> None:
        tc = self.traci.constants
        for sid in self.sumo_edges:
            self.traci.edge.subscribe(sid, [tc.LAST_STEP_VEHICLE_NUMBER,
                                            tc.VAR_CURRENT_TRAVELTIME])
        self._edges_read = True

    # ---- state --------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        self._start()
        self._cache_t = -1
        self.sumo_road = [""] * self.n  # SUMO edge each learner was on after the last step
        self.came_road = np.full(self.n, -1, dtype=np.int64)  # SUMO edge it leaves its node by
        # each inserted learner's SUMO route as last set (SUMO edge indices; -1: edges driven
        # before), the core edge of each, the route index it is at (``_pos``), and ``_fidx``:
        # the route index of the last SUMO edge before its next undecided junction (the head
        # of ``edge``)
        self._route: list[list[int]] = [[] for _ in range(self.n)]
        self._route_core: list[list[int]] = [[] for _ in range(self.n)]
        self._pos = [0] * self.n
        self._fidx = np.zeros(self.n, dtype=np.int64)
        self.teleports, self.missed, self.collisions = 0, 0, 0
        self.missed_by = np.zeros(self.n, dtype=np.int64)  # decisions missed per learner
        self.teleported: set[int] = set()
        self.removed: set[int] = set()
        obs = super().reset()
        self._add_background()
        return obs

    def _route_of(self, edges: list[int]) -> list[str]:
        ids = self.sumo_net.edge_ids
        return [ids[s] for e in edges for s in self.sumo_net.fragments[e]]

    def _background_route(self, v: int) -> list[int]:
        """Core edges of background vehicle ``v``: the core's choice rule junction by junction
        (free-flow shortest path, or logit among edges that bring it closer), over the edges
        SUMO can drive on to the destination."""
        net, sn = self.net, self.sumo_net
        node, dest, row = int(self.v_origin[v]), int(self.v_dest[v]), int(self.v_dest_row[v])
        edges, road = [], -1
        while not self._at_dest(node, dest) and len(edges) < net.n_nodes:
            out = net.out_edges(node)
            out = out[[sn.can_take(road, int(o), dest) for o in out]]
            if edges:  # the core's U-turn rule
                back = net.edge_dst[out] == net.edge_src[edges[-1]]
                out = out[~back] if (~back).any() else out
            if out.size == 0:
                break
            via = net.freeflow_s[out] + self.ff_to_dest[row, net.edge_dst[out]]
            pick = int(np.argmin(via))
            if self.scenario.background_choice == "logit":
                here = self.ff_to_dest[row, node]
                closer = self.ff_to_dest[row, net.edge_dst[out]] < here
                closer[pick] = True
                util = np.where(closer, -(via - here) / self.scenario.logit_scale_s, -np.inf)
                p = np.exp(util - util.max())
                pick = int(self.bg_rng.choice(out.size, p=p / p.sum()))
            edges.append(int(out[pick]))
            node = int(net.edge_dst[out[pick]])
            road = int(sn.last[edges[-1]]) if sn.real[edges[-1]] else road
        return edges

    def _at_dest(self, node: int, dest: int) -> bool:
        """``node`` lies in the SUMO junction of ``dest`` (arriving there is arriving)."""
        j = self.sumo_net.node_junction
        return bool(j[node] == j[dest])

    def _route_on(self, road: str, dest: int) -> list[str]:
        """SUMO's fastest route from edge ``road`` to the junction of core node ``dest``."""
        tr, ids, best = self.traci, self.sumo_net.edge_ids, None
        for t in self.sumo_net.targets(dest).tolist():
            found = tr.simulation.findRoute(road, ids[t])
            if found.edges and (best is None or found.travelTime < best.travelTime):
                best = found
        return list(best.edges) if best is not None else []

    def _add_background(self) -> None:
        tr, sn = self.traci, self.sumo_net
        for v in range(self.n, self.n_all):
            edges = self._background_route(v)
            route = self._route_of(edges) \
                if edges and self._at_dest(int(self.net.edge_dst[edges[-1]]),
                                           int(self.v_dest[v])) else []
            if not route:  # no legal SUMO route along the core's rule: SUMO's own fastest
                start = sn.exits(int(self.v_origin[v]))
                route = self._route_on(sn.edge_ids[sn.first[start[0]]], int(self.v_dest[v])) \
                    if start.size else []
            if not route:
                self.removed.add(v)  # never inserted: unarrived, counted
                continue
            tr.route.add(f"rB{v}", route)
            tr.vehicle.add(f"B{v}", f"rB{v}", depart=f"{self.v_depart[v]:.1f}",
                           departLane="best", departSpeed="max")

    def _slot_mask(self, vehicles: np.ndarray) -> np.ndarray:
        """The core's mask, less the slots SUMO cannot drive from where each vehicle is
        (no connection from the SUMO edge it leaves by, destination unreachable)."""
        valid = super()._slot_mask(vehicles)
        sn = self.sumo_net
        slots = np.maximum(self.out_table[self.v_node[vehicles]], 0)
        for row, v in enumerate(vehicles.tolist()):
            road, dest = int(self.came_road[v]), int(self.v_dest[v])
            for k in np.flatnonzero(valid[row]).tolist():
                valid[row, k] = sn.can_take(road, int(slots[row, k]), dest)
        return valid

    def _sumo_state(self) -> None:
        """Occupancy and current fragment travel times of the core edges, once per step."""
        if self._cache_t == self.t:
            return
        if not self._edges_read:
            self._subscribe_edges()
        tc, sn, e = self.traci.constants, self.sumo_net, self.net.n_edges
        res = self.traci.edge.getAllSubscriptionResults()
        vals = [res.get(sid, {}) for sid in self.sumo_edges]
        cnt = np.fromiter((v.get(tc.LAST_STEP_VEHICLE_NUMBER, 0) for v in vals), float,
                          len(vals))
        tt = np.fromiter((v.get(tc.VAR_CURRENT_TRAVELTIME, 0.0) for v in vals), float, len(vals))
        core = sn.sumo_to_core[self._subscribed]
        extra = np.minimum(tt, self.end_s) - sn.freeflow_s[self._subscribed]
        self.count = np.bincount(core, weights=cnt, minlength=e).astype(np.int64)
        self._delay = np.maximum(np.bincount(core, weights=extra, minlength=e), 0.0)
        self._cache_t = self.t

    def edge_delay(self, now: float | None = None) -> np.ndarray:
        """SUMO's current travel time of each core edge's fragment over its free-flow time."""
        self._sumo_state()
        return self._delay

    # ---- dynamics -----------------------------------------------------------------------------
    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step in SUMO (``step()`` is this, then ``observe()``, as in the core)."""
        if not self.running:
            raise SumoError("this SUMO simulation was closed (another SumoCore started in this "
                            "process); reset() it, one SumoCore per process at a time")
        s, tr, n = self.scenario, self.traci, self.n
        actions = np.asarray(actions, dtype=np.int64)
        t0, t1 = self.time_s, self.time_s + s.dt_s
        self._apply(actions)
        tr.simulationStep(t1)
        self.t += 1
        self.collisions += tr.simulation.getCollidingVehiclesNumber()
        # all vehicles' teleports from SUMO's statistics: meso does not list its teleports
        # (counted 0 before); micro's list names the teleported learners
        self.teleports = int(tr.simulation.getParameter("", "stats.teleports.total"))
        for vid in tr.simulation.getStartingTeleportIDList():
            self.teleported.add(int(vid[1:]))
        arrived = []
        for vid in tr.simulation.getArrivedIDList():
            v = int(vid[1:])
            self.v_status[v] = ARRIVED
            self.v_arrival[v] = t1
            self.v_edge[v] = -1
            arrived.append(v)
        arrived_now = np.array([v for v in arrived if v < n], dtype=np.int64)
        self._track()
        go = (self.status == WAITING) & (self.depart_s <= t1 + 1e-9)
        self.status[go] = AT_NODE
        # reward: minus the part of [t0, t1] each learner spent travelling
        end = np.minimum(np.where(np.isnan(self.arrival_s), t1, self.arrival_s), t1)
        spent = np.maximum(end - np.maximum(self.depart_s, t0), 0.0)
        reward = -spent / s.time_scale_s
        terminated = np.zeros(n, dtype=bool)
        terminated[arrived_now] = True
        reward[arrived_now] += s.arrival_bonus
        truncated = np.zeros(n, dtype=bool)
        if self.t >= s.n_steps:
            late = self.status != ARRIVED
            truncated[late] = True
            reward[late] -= s.timeout_penalty
        return reward, terminated, truncated

    def _apply(self, actions: np.ndarray) -> None:
        """Send the deciding learners' choices to SUMO (insert at the origin, or reroute)."""
        deciding = np.flatnonzero(self.status == AT_NODE)
        if deciding.size == 0:
            return
        a = actions[deciding]
        valid = self._slot_mask(deciding)
        ok = (a >= 0) & (a < self.k)
        ok[ok] = valid[np.flatnonzero(ok), a[ok]]
        if not ok.all():
            i = int(deciding[~ok][0])
            raise InvalidActionError(f"agent {i} at node {int(self.node[i])} chose slot "
                                     f"{int(actions[i])}, which is masked; use action_mask()")
        tr, sn = self.traci, self.sumo_net
        for i, e in zip(deciding.tolist(), self.out_table[self.node[deciding], a].tolist(),
                        strict=True):
            if sn.inside[e]:  # inside a joined junction: decide again at its head
                self._enter(i, [e])
                if not self._slot_mask(np.array([i]))[0].any():  # cannot happen: can_take
                    self.status[i] = ON_EDGE  # checked a way on; keep SUMO's route
                continue
            frag = sn.fragments[e]
            inserted = bool(self.sumo_road[i])
            idx = self._pos[i] if inserted else 0
            keep = self._route[i][idx: self._fidx[i] + 1] if inserted else []
            keep_core = self._route_core[i][idx: self._fidx[i] + 1] if inserted else []
            route = [*keep, *frag]
            if not self._at_dest(int(self.net.edge_dst[e]), int(self.dest[i])):
                rest = self._route_on(sn.edge_ids[frag[-1]], int(self.dest[i]))
                if not rest:
                    raise SumoError(f"SUMO finds no route from '{sn.edge_ids[frag[-1]]}' to "
                                    f"the destination of learner {i}")
                route += [sn.index[r] for r in rest[1:]]
            ids = [sn.edge_ids[s] for s in route]
            if not inserted:  # not inserted yet: depart now on the chosen edge
                tr.route.add(f"rL{i}", ids)
                tr.vehicle.add(f"L{i}", f"rL{i}", depart="now", departLane="best",
                               departSpeed="max")
                tr.vehicle.subscribe(f"L{i}", [tr.constants.VAR_ROAD_ID,
                                               tr.constants.VAR_ROUTE_INDEX])
                self.status[i] = QUEUED
            else:
                try:
                    tr.vehicle.setRoute(f"L{i}", ids)
                except tr.TraCIException:  # SUMO refuses the route: it keeps its own
                    self.status[i] = ON_EDGE
                    continue
                self.status[i] = ON_EDGE
            # SUMO keeps the edges already driven in front of the new route: same indices
            past = tr.vehicle.getRouteIndex(f"L{i}") if inserted else 0
            self._pos[i] = past
            self._route[i] = [-1] * past + route
            self._route_core[i] = [-1] * past + [*keep_core, *[e] * len(frag), *sn.sumo_to_core[
                route[len(keep) + len(frag):]].tolist()]
            self._fidx[i] = past + len(keep) + len(frag) - 1
            self._enter(i, [e])

    def _enter(self, i: int, edges: list[int]) -> None:
        """Learner ``i``'s next undecided junction is now the head of the last of core
        ``edges`` (recorded as driven)."""
        e = edges[-1]
        self.edge[i], self.node[i] = e, int(self.net.edge_dst[e])
        if self.sumo_net.real[e]:
            self.came_road[i] = self.sumo_net.last[e]
        if self.record_routes:
            self.routes.append((np.full(len(edges), i), np.array(edges)))

    def _track(self) -> None:
        """Where each learner is on its SUMO route; who is now near enough its next junction
        to decide there (:data:`LOOKAHEAD_STEPS`); who passed a junction undecided."""
        tc, length = self.traci.constants, self.sumo_net.length_m
        res = self.traci.vehicle.getAllSubscriptionResults()
        for vid, vals in res.items():
            if vid[0] != "L":
                continue
            i = int(vid[1:])
            road = vals[tc.VAR_ROAD_ID]
            if self.status[i] == ARRIVED:
                continue
            if not road:  # inserted, on no edge: being teleported (how meso's show)
                if self.sumo_road[i]:
                    self.teleported.add(i)
                continue
            idx = vals[tc.VAR_ROUTE_INDEX]
            route = self._route[i]
            if idx < 0 or idx >= len(route):
                continue
            self._pos[i] = idx
            if road[0] != ":":
                self.sumo_road[i] = road
            if self.status[i] == QUEUED:
                self.status[i] = ON_EDGE
            if idx > self._fidx[i]:
                self._passed(i, idx)
                if idx > self._fidx[i]:  # on SUMO edges of no core edge: nothing to decide
                    continue
            if self.status[i] != ON_EDGE or self._at_dest(int(self.node[i]), int(self.dest[i])):
                continue
            # metres from the end of its SUMO edge to the junction (where on its edge a meso
            # vehicle is SUMO does not say: the edge counts as driven)
            if float(length[route[idx + 1: self._fidx[i] + 1]].sum()) <= self.reach_m:
                self._at_junction(i)
        lost = [i for i in np.flatnonzero((self.status == ON_EDGE) | (self.status == AT_NODE))
                .tolist() if self.sumo_road[i] and f"L{i}" not in res and i not in self.removed]
        running = set(self.traci.vehicle.getIDList()) if lost else set()
        for i in lost:
            if f"L{i}" not in running:
                self.removed.add(i)  # left SUMO without arriving: unarrived, counted
                self.status[i] = ON_EDGE

    def _passed(self, i: int, idx: int, missed: bool = True) -> None:
        """Learner ``i`` drove past its next undecided junction (a teleport, a route SUMO
        refused): each core junction passed undecided is a missed decision; the next one on
        the route SUMO drives becomes the learner's next junction."""
        core, f = self._route_core[i], int(self._fidx[i])
        crossed = []
        for c in core[f + 1: idx + 1]:
            if c >= 0 and (not crossed or crossed[-1] != c):
                crossed.append(c)
        if not crossed:  # only SUMO edges of no core edge so far
            return
        if missed and not self._at_dest(int(self.node[i]), int(self.dest[i])):
            self.missed += len(crossed)
            self.missed_by[i] += len(crossed)
        c, f = crossed[-1], idx
        while f + 1 < len(core) and core[f + 1] == c:
            f += 1
        self._fidx[i] = f
        self._enter(i, crossed)

    def _at_junction(self, i: int) -> None:
        if self._slot_mask(np.array([i]))[0].any():
            self.status[i] = AT_NODE
        else:  # nothing SUMO can drive from here: follow the route SUMO has
            self._passed(i, int(self._fidx[i]) + 1, missed=False)

    # ---- metrics ------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float | None]:
        out = super().metrics()
        removed = np.array(sorted(self.removed), dtype=np.int64)
        out["arrival_rate"] = float((~np.isnan(self.arrival_s)).mean())
        out["forced_entries"] = 0.0
        out["teleports"] = float(self.teleports)
        out["teleported_learners"] = float(sum(v < self.n for v in self.teleported))
        out["removed_vehicles"] = float(removed.size)
        out["collisions"] = float(self.collisions)
        out["missed_decisions"] = float(self.missed)
        if self.n_all > self.n:
            bg = ~np.isnan(self.v_arrival[self.n:])
            out["background_arrival_rate"] = float(bg.mean())
        return out
