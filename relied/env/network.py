"""Compact array form of a drivable city network, built from an osmnx graph.

The environment never touches networkx in its hot path: it reads the contiguous arrays of
:class:`CityNetwork` (CSR adjacency sorted by source node, per-edge length / free-flow time /
capacity, node coordinates). Building is done once per city and cached as ``.npz``.

Capacity model (documented defaults, see ``CAPACITY_PER_LANE_KM``): an edge holds
``lanes * length_km * k_crit(highway)`` vehicles at critical density, at least 1. ``lanes``
comes from the OSM ``lanes`` tag when it parses as a positive number, else
``DEFAULT_LANES[highway]``. Speeds come from ``maxspeed`` (osmnx ``add_edge_speeds``), falling
back to ``DEFAULT_SPEED_KPH[highway]``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path

import networkx as nx
import numpy as np

#: Drivable OSM ``highway`` classes kept in the network.
DRIVABLE_HIGHWAYS: frozenset[str] = frozenset(
    {
        "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential",
        "living_street", "motorway_link", "trunk_link", "primary_link", "secondary_link",
        "tertiary_link", "road",
    }
)

#: Road classes from most to least important: a merged edge takes its most important class.
HIGHWAY_RANK: tuple[str, ...] = (
    "motorway", "trunk", "primary", "secondary", "tertiary", "motorway_link", "trunk_link",
    "primary_link", "secondary_link", "tertiary_link", "unclassified", "residential", "road",
    "living_street",
)

#: Free-flow speed (km/h) used when an edge has no usable ``maxspeed`` tag.
DEFAULT_SPEED_KPH: dict[str, float] = {
    "motorway": 100.0, "trunk": 80.0, "primary": 60.0, "secondary": 50.0, "tertiary": 40.0,
    "unclassified": 30.0, "residential": 30.0, "living_street": 10.0, "road": 30.0,
    "motorway_link": 60.0, "trunk_link": 50.0, "primary_link": 40.0, "secondary_link": 35.0,
    "tertiary_link": 30.0,
}

#: Lanes per direction assumed when the ``lanes`` tag is missing or unparsable.
DEFAULT_LANES: dict[str, float] = {
    "motorway": 2.0, "trunk": 2.0, "primary": 2.0, "secondary": 1.0, "tertiary": 1.0,
}

#: Critical density (vehicles per lane-km) by class: the occupancy at which BPR delay is 15%.
CAPACITY_PER_LANE_KM: dict[str, float] = {
    "motorway": 30.0, "trunk": 30.0, "primary": 25.0, "secondary": 25.0, "tertiary": 20.0,
}
DEFAULT_CAPACITY_PER_LANE_KM = 20.0

#: Bump when the build changes, so that stale caches are not reused.
BUILD_VERSION = 2


@dataclass(frozen=True)
class CityNetwork:
    """A strongly connected drivable network as contiguous arrays.

    Nodes are ``0..n_nodes-1``; edges ``0..n_edges-1`` are sorted by source node so that the
    out-edges of node ``u`` are ``indptr[u]:indptr[u+1]`` (CSR).
    """

    name: str
    osm_ids: np.ndarray  # (n_nodes,) int64 OSM node ids
    lon: np.ndarray  # (n_nodes,) float64
    lat: np.ndarray  # (n_nodes,) float64
    indptr: np.ndarray  # (n_nodes+1,) int64
    edge_src: np.ndarray  # (n_edges,) int32
    edge_dst: np.ndarray  # (n_edges,) int32
    length_m: np.ndarray  # (n_edges,) float64
    freeflow_s: np.ndarray  # (n_edges,) float64
    capacity: np.ndarray  # (n_edges,) float64 vehicles at critical density
    lanes: np.ndarray  # (n_edges,) float64
    highway: np.ndarray  # (n_edges,) str class
    street: np.ndarray  # (n_edges,) str OSM name (untrusted data, never an instruction)

    @property
    def n_nodes(self) -> int:
        return int(self.osm_ids.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_src.shape[0])

    @property
    def max_out_degree(self) -> int:
        return int(np.diff(self.indptr).max())

    def out_edges(self, node: int) -> np.ndarray:
        return np.arange(self.indptr[node], self.indptr[node + 1])

    def out_edge_table(self) -> np.ndarray:
        """``(n_nodes, K)`` edge ids of each node's out-edges, padded with -1."""
        k = self.max_out_degree
        deg = np.diff(self.indptr)
        table = np.full((self.n_nodes, k), -1, dtype=np.int64)
        rows = np.repeat(np.arange(self.n_nodes), deg)
        cols = np.arange(self.n_edges) - self.indptr[rows]
        table[rows, cols] = np.arange(self.n_edges)
        return table

    def edge_between(self, u: int, v: int, weight: np.ndarray | None = None) -> int:
        """Id of the cheapest edge ``u -> v`` (free-flow time by default); -1 if none."""
        cand = np.arange(self.indptr[u], self.indptr[u + 1])
        cand = cand[self.edge_dst[cand] == v]
        if cand.size == 0:
            return -1
        w = self.freeflow_s if weight is None else weight
        return int(cand[np.argmin(w[cand])])

    def sparse(self, weight: np.ndarray | None = None):
        """scipy CSR matrix of the network weighted by ``weight`` (free-flow time by default).

        Parallel edges keep the cheapest weight.
        """
        from scipy.sparse import csr_matrix

        w = self.freeflow_s if weight is None else weight
        order = np.lexsort((w, self.edge_dst, self.edge_src))
        src, dst, ww = self.edge_src[order], self.edge_dst[order], w[order]
        first = np.ones(src.size, dtype=bool)
        first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
        return csr_matrix((ww[first], (src[first], dst[first])), shape=(self.n_nodes,) * 2)

    def save(self, path: Path) -> None:
        """Write the arrays atomically to ``path`` (``.npz``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        np.savez(tmp, name=np.array(self.name), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CityNetwork:
        with np.load(path, allow_pickle=False) as data:
            kw = {f.name: data[f.name] for f in fields(cls)}
        kw["name"] = str(kw["name"])
        return cls(**kw)


def _first(value: object) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _canonical_tags(graph: nx.MultiDiGraph) -> None:
    """Make list-valued tags of merged edges independent of set order (Python's string hashing
    varies per process): ``highway`` becomes its most important class, other lists are sorted."""
    rank = {h: i for i, h in enumerate(HIGHWAY_RANK)}
    for _, _, data in graph.edges(data=True):
        for key, value in data.items():
            if not isinstance(value, list):
                continue
            if key == "highway":
                data[key] = min(map(str, value), key=lambda h: (rank.get(h, len(rank)), h))
            else:
                data[key] = sorted(value, key=str)


def _is_drivable(highway: object) -> bool:
    values = highway if isinstance(highway, list) else [highway]
    return any(str(v) in DRIVABLE_HIGHWAYS for v in values)


def _lanes(tag: object, highway: str) -> float:
    values = tag if isinstance(tag, list) else [tag]
    nums = [float(m) for v in values if v is not None for m in re.findall(r"\d+(?:\.\d+)?", str(v))]
    nums = [n for n in nums if 0 < n < 20]
    return max(nums) if nums else DEFAULT_LANES.get(highway, 1.0)


def drivable_subgraph(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """Keep drivable edges only, then the largest strongly connected component."""
    import osmnx as ox

    drive = graph.edge_subgraph(
        [(u, v, k) for u, v, k, d in graph.edges(keys=True, data=True)
         if _is_drivable(d.get("highway"))]
    ).copy()
    if drive.number_of_edges() == 0:
        return drive
    return ox.truncate.largest_component(drive, strongly=True)


def build_network(graph: nx.MultiDiGraph, name: str, simplify: bool = True) -> CityNetwork:
    """Turn a raw osmnx graph into a :class:`CityNetwork` (drive network, largest SCC).

    Raises ``ValueError`` when no drivable road is left.
    """
    import osmnx as ox

    drive = drivable_subgraph(graph)
    if drive.number_of_nodes() < 2 or drive.number_of_edges() == 0:
        raise ValueError(f"city '{name}' has no drivable roads (highway classes "
                         f"{sorted(DRIVABLE_HIGHWAYS)[:4]}...); pick another area or file")
    if simplify and not drive.graph.get("simplified", False):
        drive = ox.simplify_graph(drive)
        drive = ox.truncate.largest_component(drive, strongly=True)
    _canonical_tags(drive)
    drive = ox.add_edge_speeds(drive, hwy_speeds=dict(DEFAULT_SPEED_KPH), fallback=30.0)
    drive = ox.add_edge_travel_times(drive)

    nodes = sorted(drive.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    edges = sorted(drive.edges(keys=True, data=True),
                   key=lambda e: (index[e[0]], index[e[1]], e[2]))
    src = np.array([index[u] for u, _, _, _ in edges], dtype=np.int32)
    dst = np.array([index[v] for _, v, _, _ in edges], dtype=np.int32)
    hw = [_first(d.get("highway")) for *_, d in edges]
    length = np.array([max(float(d.get("length", 1.0)), 1.0) for *_, d in edges])
    tt = np.array([max(float(d.get("travel_time", 1.0)), 0.5) for *_, d in edges])
    lanes = np.array([_lanes(d.get("lanes"), h) for (*_, d), h in zip(edges, hw, strict=True)])
    k_crit = np.array([CAPACITY_PER_LANE_KM.get(h, DEFAULT_CAPACITY_PER_LANE_KM) for h in hw])
    capacity = np.maximum(1.0, lanes * length / 1000.0 * k_crit)
    indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.add.at(indptr, src.astype(np.int64) + 1, 1)
    return CityNetwork(
        name=name,
        osm_ids=np.array(nodes, dtype=np.int64),
        lon=np.array([float(drive.nodes[n]["x"]) for n in nodes]),
        lat=np.array([float(drive.nodes[n]["y"]) for n in nodes]),
        indptr=np.cumsum(indptr),
        edge_src=src,
        edge_dst=dst,
        length_m=length,
        freeflow_s=tt,
        capacity=capacity,
        lanes=lanes,
        highway=np.array(hw, dtype=str),
        street=np.array([_first(d.get("name")) for *_, d in edges], dtype=str),
    )


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
