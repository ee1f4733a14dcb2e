"""Traffic signals: which junctions OSM says are signalised, and their fixed-time plans.

Signalised junctions (:func:`signal_junctions`, stored as ``CityNetwork.signal``) follow what
``netconvert`` makes of the same OSM file with the options the SUMO backend uses
(``--tls.guess-signals --tls.discard-simple --tls.join --junctions.join``):

* an OSM node is a *signal* when its ``highway`` tag contains ``traffic_signal`` or its
  ``crossing`` tag contains ``traffic_signals`` (netconvert's test); other values, non-text
  values and nodes off the drivable network are ignored (OSM tags are untrusted input);
* a signal at a junction (a node meeting three or more other nodes) signalises it;
* a signal on a plain road (two neighbours: a pedestrian light, or the stop line of an
  approach, where OSM usually maps it) signalises the junction ahead when the junction is
  within :data:`GUESS_DIST_M` downstream and *every* approach of that junction from outside
  its joined cluster has such a signal (``--tls.guess-signals``, slack 0); otherwise it is
  dropped (``--tls.discard-simple``).

Junctions joined by edges of at most :data:`JOIN_DIST_M` (a dual carriageway crossing drawn as
2-4 OSM nodes; ``--junctions.join``) form one *cluster* that runs one program: a signal
anywhere in it signalises all of it, and the edges inside it cross without a second signal
(at their full saturation flow: the cluster's plan already shares its time out).

Plans (:func:`signal_plan`): netconvert's static defaults. Every cluster runs a cycle of
:data:`CYCLE_S` = 90 s (``--tls.cycle.time``) from offset 0; its approaches from outside are
grouped into phases by axis, opposite approaches together (``--tls.layout opposites``); each
phase has the same green ``(90 - P Y) / P`` followed by a yellow ``Y`` (netconvert's braking
time: 3 s below 71 km/h on the fastest approach, else ``1.8 + v / 6`` s, ``v`` in m/s), which
the core treats as red. A cluster with a single phase (no crossing stream) shows
:data:`LONE_RED_S` of red per cycle (``--tls.red.time``). Phases are ordered by their most
important road (class, then lanes). Not modelled: netconvert's protected left-turn phases
(6 s, where it builds them), and actuated control. During green an approach discharges at its
full saturation flow (``CityNetwork.saturation_vps``), in place of the mean capacity
``saturation * green_share`` the core uses at unsignalised junctions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: netconvert's ``--tls.guess-signals.dist``: a signal this close upstream marks the junction.
GUESS_DIST_M = 25.0
#: netconvert's ``--junctions.join-dist``: junctions this close form one cluster.
JOIN_DIST_M = 20.0
#: netconvert's ``--tls.cycle.time``.
CYCLE_S = 90.0
#: netconvert's ``--tls.red.time``: red per cycle of a signal with no conflicting stream.
LONE_RED_S = 5.0
#: Axes within this angle (degrees) share a phase.
AXIS_TOLERANCE_DEG = 45.0


def is_signal_tag(tags: dict) -> bool:
    """Whether an OSM node's tags mark traffic signals (netconvert's reading); anything that
    is not a string is ignored."""
    highway, crossing = tags.get("highway"), tags.get("crossing")
    return (isinstance(highway, str) and "traffic_signal" in highway) or \
        (isinstance(crossing, str) and "traffic_signals" in crossing)


def _length(data: dict) -> float:
    try:
        value = float(data.get("length", 0.0))
    except (TypeError, ValueError):
        return math.inf
    return value if math.isfinite(value) and value >= 0 else math.inf


def signal_junctions(raw, simplified) -> set[int]:
    """OSM ids of the nodes of ``simplified`` (the core's graph) that are signalised junctions,
    from the signal tags on ``raw`` (the drivable graph before osmnx merged its road
    segments: signals on approaches are among the nodes it merged away)."""
    def neighbours(graph, n) -> set:
        return (set(graph.predecessors(n)) | set(graph.successors(n))) - {n}

    junction = {n for n in simplified.nodes if len(neighbours(simplified, n)) >= 3}
    tagged = {n for n, d in raw.nodes(data=True) if is_signal_tag(d)}
    direct = tagged & junction
    approaches: set[tuple[int, int]] = set()  # (junction, node before it) with a signal
    for s in tagged - junction:
        for v in raw.successors(s):
            prev, cur = s, v
            dist = min((_length(d) for d in raw.get_edge_data(s, v).values()), default=math.inf)
            while dist <= GUESS_DIST_M and cur not in junction:
                ahead = [w for w in raw.successors(cur) if w != prev]
                if len(ahead) != 1:
                    break
                nxt = ahead[0]
                dist += min(_length(d) for d in raw.get_edge_data(cur, nxt).values())
                prev, cur = cur, nxt
            if cur in junction and dist <= GUESS_DIST_M:
                approaches.add((cur, prev))
    found = set(direct)
    for j in junction - direct:
        outside = [p for p in raw.predecessors(j) if p != j and not _inside(raw, p, j, junction)]
        if len(outside) >= 2 and all((j, p) in approaches for p in outside):
            found.add(j)
    # a joined junction runs one program: a signal at one of its nodes controls all of them
    todo = list(found)
    while todo:
        n = todo.pop()
        for v in neighbours(simplified, n) & junction - found:
            if _inside(simplified, n, v, junction) or _inside(simplified, v, n, junction):
                found.add(v)
                todo.append(v)
    return found


def _inside(graph, p, j, junction: set) -> bool:
    """Whether an edge ``p -> j`` lies inside a joined junction (both ends junctions, short)."""
    data = graph.get_edge_data(p, j)
    return p in junction and j in junction and data is not None and \
        min(_length(d) for d in data.values()) <= JOIN_DIST_M


@dataclass(frozen=True)
class SignalPlan:
    """Per edge (index -1 appended: a vehicle at its origin, never signalled): whether leaving
    it crosses a signal (``controlled``), when its green starts (``start_s``, within the
    cycle) and lasts (``green_s``), and whether it lies inside a signalised cluster
    (``inside``: crossing the cluster is one movement, so it discharges at its saturation
    flow with no light of its own), and its yellow after the green (``yellow_s``, red to the
    core; the SUMO backend builds the same programs from it: :mod:`relied.env.sumo.signals`)."""

    cycle_s: float
    controlled: np.ndarray  # (n_edges + 1,) bool
    inside: np.ndarray  # (n_edges + 1,) bool
    start_s: np.ndarray  # (n_edges + 1,) float64
    green_s: np.ndarray  # (n_edges + 1,) float64
    yellow_s: np.ndarray  # (n_edges + 1,) float64

    def next_green(self, edges: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The earliest time ``>= t`` at which a vehicle at the head of each of ``edges`` sees
        green (``t`` itself where the edge is not controlled or its light is green)."""
        u = np.mod(t - self.start_s[edges], self.cycle_s)
        red = self.controlled[edges] & (u >= self.green_s[edges])
        return np.where(red, t + (self.cycle_s - u), t)

    def green_from(self, edges: np.ndarray, t: np.ndarray) -> np.ndarray:
        """:meth:`next_green` of controlled ``edges`` (the same arithmetic, without the check
        that they are controlled)."""
        u = np.mod(t - self.start_s[edges], self.cycle_s)
        return np.where(u >= self.green_s[edges], t + (self.cycle_s - u), t)

    def mean_red_wait(self) -> np.ndarray:
        """Mean wait at the light of a vehicle arriving at a random time, ``r^2 / (2 C)``
        (0 for edges not controlled)."""
        red = self.cycle_s - self.green_s
        return np.where(self.controlled, red * red / (2.0 * self.cycle_s), 0.0)

    @property
    def n_controlled(self) -> int:
        return int(np.count_nonzero(self.controlled))


_RANK = ("motorway", "trunk", "primary", "secondary", "tertiary", "motorway_link", "trunk_link",
         "primary_link", "secondary_link", "tertiary_link", "unclassified", "residential",
         "road", "living_street")


def clusters(net) -> np.ndarray:
    """Cluster label of each node: signalised junctions joined by edges of at most
    :data:`JOIN_DIST_M` share one (the smallest node index among them); others their own."""
    label = np.arange(net.n_nodes)
    sig = np.asarray(net.signal, dtype=bool)
    short = (net.length_m <= JOIN_DIST_M) & sig[net.edge_src] & sig[net.edge_dst]
    src, dst = net.edge_src[short], net.edge_dst[short]
    changed = src.size > 0
    while changed:  # label propagation over the short edges (small components)
        low = np.minimum(label[src], label[dst])
        changed = bool(np.any(low < label[src]) or np.any(low < label[dst]))
        np.minimum.at(label, src, low)
        np.minimum.at(label, dst, low)
    return label


def signal_plan(net) -> SignalPlan:
    """The fixed-time plan of every signalised cluster of ``net`` (see the module doc)."""
    m = net.n_edges
    controlled = np.zeros(m + 1, dtype=bool)
    start = np.zeros(m + 1)
    green = np.full(m + 1, CYCLE_S)
    yellow = np.zeros(m + 1)
    sig = np.asarray(net.signal, dtype=bool)
    label = clusters(net)
    into = sig[net.edge_dst] & (label[net.edge_src] != label[net.edge_dst])
    inside = np.append(sig[net.edge_dst] & ~into, False)
    lat0 = np.deg2rad(net.lat.mean())
    x = np.deg2rad(net.lon) * np.cos(lat0)
    y = np.deg2rad(net.lat)
    speed = net.length_m / net.freeflow_s
    rank = {h: i for i, h in enumerate(_RANK)}
    edges = np.flatnonzero(into)
    for c in np.unique(label[net.edge_dst[edges]]):
        mine = edges[label[net.edge_dst[edges]] == c]
        src, dst = net.edge_src[mine], net.edge_dst[mine]
        axis = np.mod(np.degrees(np.arctan2(y[dst] - y[src], x[dst] - x[src])), 180.0)
        phase = np.full(mine.size, -1)
        axes: list[float] = []
        for i in np.argsort(axis, kind="stable"):
            for p, a in enumerate(axes):
                d = abs(axis[i] - a) % 180.0
                if min(d, 180.0 - d) <= AXIS_TOLERANCE_DEG:
                    phase[i] = p
                    break
            else:
                phase[i] = len(axes)
                axes.append(float(axis[i]))
        importance = [min((rank.get(str(net.highway[e]), len(rank)), -float(net.lanes[e]))
                          for e in mine[phase == p]) for p in range(len(axes))]
        slot = np.empty(len(axes), dtype=int)
        slot[sorted(range(len(axes)), key=importance.__getitem__)] = np.arange(len(axes))
        vmax = float(speed[mine].max())
        yel = 3.0 if vmax < 71 / 3.6 else float(int(1.8 + vmax / 6.0))
        n = len(axes)
        g = CYCLE_S - yel - LONE_RED_S if n == 1 else (CYCLE_S - n * yel) / n
        controlled[mine] = True
        green[mine] = g
        yellow[mine] = yel
        start[mine] = slot[phase] * (g + yel)
    return SignalPlan(CYCLE_S, controlled, inside, start, green, yellow)
