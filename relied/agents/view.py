"""A compact view of a city for the planner, and the executor that expands plans into routes.

A city with thousands of nodes does not fit a prompt. The view keeps ``n_landmarks`` landmark
nodes (farthest-point sampling on free-flow time, deterministic), assigns every node to the
zone of its nearest landmark, and links landmarks whose zones touch by a corridor with its
free-flow time. In prompts a node is a compact id ``n<index>`` (an OSM id also resolves), and
a node route is shown as its few waypoints (:meth:`CityView.waypoints`). Street names are OSM
data: they are shown quoted, cleaned and cut to 40 characters, and never steer any
computation.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cached_property

import numpy as np
from scipy.sparse.csgraph import dijkstra

from relied.env.network import CityNetwork

_PRINTABLE = re.compile(r"[^\w .,'()/&-]", re.UNICODE)


def clean_name(name: str, limit: int = 40) -> str:
    """OSM street name as inert data: odd characters dropped, whitespace folded, cut."""
    return " ".join(_PRINTABLE.sub(" ", str(name)).split())[:limit]


class PlanRouteError(ValueError):
    """A route reference or expansion that is not valid on the network."""


class CityView:
    """Landmarks, zones and corridors of ``net``; expands node references into routes."""

    def __init__(self, net: CityNetwork, n_landmarks: int = 24):
        self.net = net
        self.graph = net.sparse()
        k = max(2, min(n_landmarks, net.n_nodes))
        deg = np.diff(net.indptr)
        first = int(np.argmax(deg))
        chosen = [first]
        dist = dijkstra(self.graph, indices=[first])[0]
        dist = np.minimum(dist, dijkstra(self.graph.T.tocsr(), indices=[first])[0])
        for _ in range(k - 1):
            nxt = int(np.argmax(np.where(np.isfinite(dist), dist, -1)))
            if dist[nxt] <= 0:
                break
            chosen.append(nxt)
            d = dijkstra(self.graph, indices=[nxt])[0]
            dist = np.minimum(dist, d)
        self.landmarks = np.array(chosen, dtype=np.int64)
        self.from_landmark = dijkstra(self.graph, indices=self.landmarks)
        self.zone = np.argmin(self.from_landmark, axis=0)
        self.labels = [f"L{i}" for i in range(len(self.landmarks))]
        self._label_index = {lab: i for i, lab in enumerate(self.labels)}
        self._node_index = {int(o): i for i, o in enumerate(net.osm_ids.tolist())}
        self._pred: dict[int, np.ndarray] = {}

    # ---- description ------------------------------------------------------------------------
    @cached_property
    def corridors(self) -> list[tuple[int, int, float]]:
        """``(zone a, zone b, free-flow s between their landmarks)`` for touching zones."""
        za, zb = self.zone[self.net.edge_src], self.zone[self.net.edge_dst]
        pairs = sorted({(int(a), int(b)) for a, b in zip(za, zb, strict=True) if a != b})
        return [(a, b, float(self.from_landmark[a, self.landmarks[b]])) for a, b in pairs]

    def landmark_street(self, i: int) -> str:
        node = self.landmarks[i]
        out = self.net.street[self.net.indptr[node]:self.net.indptr[node + 1]]
        counts = Counter(n for n in out.tolist() if n)
        # most frequent name, ties broken by the name itself: no dependence on set order
        return clean_name(min(counts, key=lambda n: (-counts[n], n))) if counts else ""

    def corridor_loads(self, edge_load: np.ndarray) -> dict[tuple[int, int], float]:
        """Vehicles on edges between (or inside) zones, summed per zone pair."""
        za, zb = self.zone[self.net.edge_src], self.zone[self.net.edge_dst]
        loads: dict[tuple[int, int], float] = {}
        for e in np.flatnonzero(edge_load > 0):
            key = (int(za[e]), int(zb[e]))
            loads[key] = loads.get(key, 0.0) + float(edge_load[e])
        return loads

    def describe(self) -> dict:
        """JSON-ready landmarks (``{"L0": "n12 street"}``) and corridors with their free-flow
        seconds (``{"L0": "L5:123 L7:88"}``): a few hundred tokens whatever the fleet."""
        corridors: dict[str, list[str]] = {}
        for a, b, t in self.corridors:
            corridors.setdefault(self.labels[a], []).append(f"{self.labels[b]}:{t:.0f}")
        return {
            "landmarks": {lab: f"{self.ref(int(n))} {self.landmark_street(i)}".strip()
                          for i, (lab, n) in enumerate(zip(self.labels, self.landmarks,
                                                           strict=True))},
            "corridors": {k: " ".join(v) for k, v in corridors.items()},
        }

    def load_rows(self, edge_load: np.ndarray) -> dict[str, str]:
        """Vehicles per corridor (and zone interior, ``L0:L0``) as ``{"L0": "L0:3 L5:4"}``."""
        rows: dict[str, list[str]] = {}
        for (a, b), v in sorted(self.corridor_loads(edge_load).items()):
            if v > 0:
                rows.setdefault(self.labels[a], []).append(f"{self.labels[b]}:{v:.0f}")
        return {k: " ".join(v) for k, v in rows.items()}

    def zone_label(self, node: int) -> str:
        return self.labels[int(self.zone[node])]

    # ---- references and expansion -----------------------------------------------------------
    def ref(self, node: int) -> str:
        """Compact prompt id of a node index: ``n<index>``."""
        return f"n{int(node)}"

    def resolve(self, ref: str | int) -> int:
        """Node index of a reference: a landmark label ``L<k>``, a compact id ``n<index>`` or
        an OSM node id."""
        text = str(ref).strip()
        if text in self._label_index:
            return int(self.landmarks[self._label_index[text]])
        if text[:1] == "n" and text[1:].isdigit() and int(text[1:]) < self.net.n_nodes:
            return int(text[1:])
        if text.lstrip("-").isdigit() and int(text) in self._node_index:
            return self._node_index[int(text)]
        raise PlanRouteError(f"'{text[:40]}' is neither a landmark (L0..L{len(self.labels) - 1}) "
                             f"nor a node of '{self.net.name}'")

    def shortest(self, u: int, v: int) -> list[int]:
        """Free-flow shortest node path ``u .. v`` (inclusive)."""
        if u not in self._pred:
            _, pred = dijkstra(self.graph, indices=[u], return_predecessors=True)
            self._pred[u] = pred[0]
        pred, path = self._pred[u], [v]
        while path[-1] != u:
            p = int(pred[path[-1]])
            if p < 0:
                raise PlanRouteError(f"no path between nodes {self.osm(u)} and {self.osm(v)}")
            path.append(p)
        return path[::-1]

    def expand(self, refs: list[str]) -> list[int]:
        """Node route through ``refs``: adjacent references are one edge, others are joined by
        the free-flow shortest path (the executor of waypoint plans)."""
        nodes = [self.resolve(r) for r in refs]
        route = [nodes[0]]
        for v in nodes[1:]:
            u = route[-1]
            if u == v:
                continue
            route.extend([v] if self.net.edge_between(u, v) >= 0 else self.shortest(u, v)[1:])
        return route

    def waypoints(self, route: list[int]) -> list[int]:
        """The fewest nodes of ``route`` whose :meth:`expand` gives ``route`` back (greedy: a
        waypoint ends where the route leaves the free-flow shortest path of the last one)."""
        if len(route) < 3:
            return list(route)
        out, i = [route[0]], 0
        while i < len(route) - 1:
            u, j = route[i], i + 1
            self.shortest(u, u)  # fills the predecessor tree of u
            pred = self._pred[u]
            while (int(pred[route[i + 1]]) == u and j + 1 < len(route)
                   and int(pred[route[j + 1]]) == route[j]
                   and self.net.edge_between(u, route[j + 1]) < 0):
                j += 1
            out.append(route[j])
            i = j
        return out if self.expand([self.ref(n) for n in out]) == list(route) else list(route)

    def osm(self, node: int) -> int:
        return int(self.net.osm_ids[node])

    def route_time(self, route: list[int], weight: np.ndarray | None = None) -> float:
        w = self.net.freeflow_s if weight is None else weight
        return float(sum(w[self.net.edge_between(u, v, w)]
                         for u, v in zip(route[:-1], route[1:], strict=True)))
