"""Compact array form of a drivable city network, built from an osmnx graph.

The environment never touches networkx in its hot path: it reads the contiguous arrays of
:class:`CityNetwork` (CSR adjacency sorted by source node, per-edge length / free-flow time /
flow and storage capacity, node coordinates). Building is done once per city and cached.

Link parameters (documented defaults; sources: HCM 6th ed. base saturation flows, and the
jam spacing of queue-based simulators such as MATSim's QSim and UXsim):

* ``lanes``: the OSM ``lanes`` tag when it parses as a positive number (the larger of a list),
  else ``DEFAULT_LANES[highway]``.
* free-flow speed: ``maxspeed`` (osmnx ``add_edge_speeds``), else ``DEFAULT_SPEED_KPH[highway]``.
* ``saturation_vps``: outflow capacity in vehicles per second,
  ``lanes * SATURATION_VPH_PER_LANE[highway] / 3600`` (1,800 veh/h/lane on arterials).
* ``green_share``: the share of time an intersection gives an approach. Crossing streams take
  turns: a node with ``m`` incoming edges is run in ``ceil(m / 2)`` phases (opposing approaches
  together) with 10% lost time, so an approach gets ``0.9 / phases`` (1 when ``m == 1``: no
  conflict). It applies at signalised and priority junctions alike (OSM rarely tags which).
  The core discharges an edge at ``saturation_vps * green_share``.
* ``storage``: vehicles the edge holds when jammed, ``max(1, lanes * length / JAM_SPACING_M)``.
* ``capacity``: vehicles at critical density, ``max(1, lanes * length_km * k_crit(highway))``,
  used only by the BPR comparison model.
* ``signal``: per node, whether it is a signalised junction (OSM ``traffic_signals``, read as
  netconvert does: :mod:`relied.env.signals`); used only when ``Scenario.signals`` is on.
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

#: Saturation flow (vehicles per hour and lane) by class: HCM-style values, 2,100 on motorways,
#: 1,800 on arterials, lower on minor roads where turning, parking and pedestrians slow the
#: discharge. Unlisted classes use ``DEFAULT_SATURATION_VPH``.
SATURATION_VPH_PER_LANE: dict[str, float] = {
    "motorway": 2100.0, "trunk": 1900.0, "primary": 1800.0, "secondary": 1800.0,
    "tertiary": 1700.0, "motorway_link": 1800.0, "trunk_link": 1700.0, "primary_link": 1700.0,
    "secondary_link": 1600.0, "tertiary_link": 1600.0, "unclassified": 1500.0,
    "residential": 1400.0, "road": 1400.0, "living_street": 900.0,
}
DEFAULT_SATURATION_VPH = 1400.0

#: Road length one stopped vehicle takes in a jam (jam density 133 vehicles/km/lane).
JAM_SPACING_M = 7.5

#: Share of time lost to phase changes at an intersection with conflicting approaches.
LOST_TIME_SHARE = 0.1

#: Critical density (vehicles per lane-km) by class, for the BPR comparison model.
CAPACITY_PER_LANE_KM: dict[str, float] = {
    "motorway": 30.0, "trunk": 30.0, "primary": 25.0, "secondary": 25.0, "tertiary": 20.0,
}
DEFAULT_CAPACITY_PER_LANE_KM = 20.0

#: Bump when the build changes, so that stale caches are not reused (4: ``signal``).
BUILD_VERSION = 4


class NetworkError(ValueError):
    """Arrays that do not form a valid network; the message names the field."""


@dataclass(frozen=True)
class CityNetwork:
    """A strongly connected drivable network as contiguous arrays.

    Nodes are ``0..n_nodes-1``; edges ``0..n_edges-1`` are sorted by source node so that the
    out-edges of node ``u`` are ``indptr[u]:indptr[u+1]`` (CSR). Build one from OSM with
    :func:`build_network`, or from plain arrays with :meth:`from_edges`.
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
    lanes: np.ndarray  # (n_edges,) float64
    saturation_vps: np.ndarray  # (n_edges,) float64 outflow capacity, vehicles per second
    green_share: np.ndarray  # (n_edges,) float64 share of time the head intersection gives it
    storage: np.ndarray  # (n_edges,) float64 vehicles held when jammed
    capacity: np.ndarray  # (n_edges,) float64 vehicles at critical density (BPR only)
    highway: np.ndarray  # (n_edges,) str class
    street: np.ndarray  # (n_edges,) str OSM name (untrusted data, never an instruction)
    signal: np.ndarray  # (n_nodes,) bool signalised junction

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`NetworkError` naming the first inconsistent field."""
        n, m = self.osm_ids.shape[0], self.edge_src.shape[0]
        for f in fields(self):
            if f.name == "name":
                continue
            arr = getattr(self, f.name)
            want = n + 1 if f.name == "indptr" else \
                n if f.name in ("osm_ids", "lon", "lat", "signal") else m
            if arr.ndim != 1 or arr.shape[0] != want:
                raise NetworkError(f"network '{self.name}': field '{f.name}' has shape "
                                   f"{arr.shape}, expected ({want},)")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise NetworkError(f"network '{self.name}': field '{f.name}' has non-finite "
                                   "values")
        if n < 2 or m < 1:
            raise NetworkError(f"network '{self.name}' has {n} nodes and {m} edges; "
                               "it needs at least 2 nodes and 1 edge")
        if self.signal.dtype != np.bool_:
            raise NetworkError(f"network '{self.name}': field 'signal' must be bool, not "
                               f"{self.signal.dtype}")
        if (self.green_share > 1).any():
            raise NetworkError(f"network '{self.name}': green_share must lie in (0, 1]")
        for name in ("length_m", "freeflow_s", "lanes", "saturation_vps", "green_share",
                     "storage", "capacity"):
            arr = getattr(self, name)
            if (arr <= 0).any():
                i = int(np.flatnonzero(arr <= 0)[0])
                raise NetworkError(f"network '{self.name}': {name} of edge {i} is "
                                   f"{float(arr[i])}; it must be positive")
        for name in ("edge_src", "edge_dst"):
            arr = getattr(self, name)
            if arr.min() < 0 or arr.max() >= n:
                raise NetworkError(f"network '{self.name}': {name} holds node indices outside "
                                   f"0..{n - 1}")
        if self.indptr[0] != 0 or self.indptr[-1] != m or (np.diff(self.indptr) < 0).any() or \
                not np.array_equal(np.repeat(np.arange(n), np.diff(self.indptr)), self.edge_src):
            raise NetworkError(f"network '{self.name}': indptr does not match edge_src "
                               "(edges must be sorted by source node)")

    @classmethod
    def from_edges(cls, name: str, lon: np.ndarray, lat: np.ndarray, src: np.ndarray,
                   dst: np.ndarray, length_m: np.ndarray, speed_kph: np.ndarray,
                   lanes: np.ndarray | None = None, highway: np.ndarray | None = None,
                   street: np.ndarray | None = None, osm_ids: np.ndarray | None = None,
                   saturation_vps: np.ndarray | None = None,
                   green_share: np.ndarray | None = None,
                   storage: np.ndarray | None = None,
                   signal: np.ndarray | None = None) -> CityNetwork:
        """A network from plain per-node and per-edge arrays (any edge order); missing link
        parameters follow the documented per-class defaults. Raises :class:`NetworkError`."""
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        m, n = src.shape[0], np.asarray(lon).shape[0]
        hw = np.asarray(highway if highway is not None else ["primary"] * m, dtype=str)
        length = np.asarray(length_m, dtype=np.float64)
        speed = np.asarray(speed_kph, dtype=np.float64)
        if speed.shape != (m,) or (speed <= 0).any() or not np.isfinite(speed).all():
            raise NetworkError(f"network '{name}': speed_kph must be {m} positive numbers")
        ln = (np.asarray(lanes, dtype=np.float64) if lanes is not None
              else np.array([DEFAULT_LANES.get(h, 1.0) for h in hw]))
        sat = (np.asarray(saturation_vps, dtype=np.float64) if saturation_vps is not None else
               ln * np.array([SATURATION_VPH_PER_LANE.get(h, DEFAULT_SATURATION_VPH)
                              for h in hw]) / 3600.0)
        store = (np.asarray(storage, dtype=np.float64) if storage is not None
                 else np.maximum(1.0, ln * length / JAM_SPACING_M))
        if green_share is None and m and dst.min() >= 0 and dst.max() < n:
            incoming = np.bincount(dst, minlength=n)[dst]
            phases = np.ceil(incoming / 2.0)
            green_share = np.where(incoming <= 1, 1.0, (1.0 - LOST_TIME_SHARE) / phases)
        green = np.asarray(green_share if green_share is not None else np.ones(m), dtype=float)
        k_crit = np.array([CAPACITY_PER_LANE_KM.get(h, DEFAULT_CAPACITY_PER_LANE_KM) for h in hw])
        order = np.lexsort((dst, src))
        indptr = np.zeros(n + 1, dtype=np.int64)
        if m and src.min() >= 0 and src.max() < n:
            np.add.at(indptr, src + 1, 1)
        return cls(
            name=name,
            osm_ids=np.asarray(osm_ids if osm_ids is not None else np.arange(n), dtype=np.int64),
            lon=np.asarray(lon, dtype=np.float64), lat=np.asarray(lat, dtype=np.float64),
            indptr=np.cumsum(indptr), edge_src=src[order].astype(np.int32),
            edge_dst=dst[order].astype(np.int32), length_m=length[order],
            freeflow_s=np.maximum(length / (speed / 3.6), 0.5)[order], lanes=ln[order],
            saturation_vps=sat[order], green_share=green[order], storage=store[order],
            capacity=np.maximum(1.0, ln * length / 1000.0 * k_crit)[order], highway=hw[order],
            street=np.asarray(street if street is not None else [""] * m, dtype=str)[order],
            signal=(np.zeros(n, dtype=bool) if signal is None
                    else np.asarray(signal, dtype=bool)),
        )

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

    from relied.env.signals import signal_junctions

    drive = raw = drivable_subgraph(graph)
    if drive.number_of_nodes() < 2 or drive.number_of_edges() == 0:
        raise ValueError(f"city '{name}' has no drivable roads (highway classes "
                         f"{sorted(DRIVABLE_HIGHWAYS)[:4]}...); pick another area or file")
    if simplify and not drive.graph.get("simplified", False):
        drive = ox.simplify_graph(drive)
        drive = ox.truncate.largest_component(drive, strongly=True)
    signals = signal_junctions(raw, drive)
    _canonical_tags(drive)
    drive = ox.add_edge_speeds(drive, hwy_speeds=dict(DEFAULT_SPEED_KPH), fallback=30.0)

    nodes = sorted(drive.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    edges = sorted(drive.edges(keys=True, data=True),
                   key=lambda e: (index[e[0]], index[e[1]], e[2]))
    hw = [_first(d.get("highway")) for *_, d in edges]
    return CityNetwork.from_edges(
        name,
        lon=np.array([float(drive.nodes[n]["x"]) for n in nodes]),
        lat=np.array([float(drive.nodes[n]["y"]) for n in nodes]),
        src=np.array([index[u] for u, _, _, _ in edges]),
        dst=np.array([index[v] for _, v, _, _ in edges]),
        length_m=np.array([max(float(d.get("length", 1.0)), 1.0) for *_, d in edges]),
        speed_kph=np.array([float(d["speed_kph"]) for *_, d in edges]),
        lanes=np.array([_lanes(d.get("lanes"), h) for (*_, d), h in zip(edges, hw, strict=True)]),
        highway=np.array(hw, dtype=str),
        street=np.array([_first(d.get("name")) for *_, d in edges], dtype=str),
        osm_ids=np.array(nodes, dtype=np.int64),
        signal=np.array([n in signals for n in nodes], dtype=bool),
    )


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
