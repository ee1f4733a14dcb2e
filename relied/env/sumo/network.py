"""The SUMO network of a city: built by ``netconvert`` from the core's OSM file, cached, and
mapped edge by edge onto the core's :class:`CityNetwork`.

``netconvert`` options (:data:`NETCONVERT_OPTIONS`, each with its reason beside it): raw OSM
junctions are what SUMO users never simulate as they are. A dual carriageway crossing is two to
four OSM nodes a few metres apart; as separate SUMO junctions each has its own priority rules
and no room to queue between them, so micro traffic locks itself ("yield"/"jam" teleports).
The options are the usual OSM clean-up: junctions joined, signals guessed and joined,
roundabouts and ramps guessed, simple corner shapes. A second pass on that net adds, with
``--connection-files``, the turns the core allows that netconvert left out at joined junctions
(without them a learner is masked off its best turn and can be sent round a block for ever,
as the core's costs-to-go expect the turn). The net is cached beside the core's
network entry (``<entry>.sumo<N>-<key>.net.xml``), keyed by the source file's SHA-256, the
options and SUMO's version.

Mapping: OSM nodes that osmnx keeps are the core's nodes; each lies in one SUMO junction (its own
id, or ``cluster_<id>_<id>...`` where netconvert joined it with neighbours). A core edge
``u -> v`` between two SUMO junctions maps to the shortest connected chain of SUMO edges from
junction(u) to junction(v) whose inner junctions hold no core node (its *fragment*); a core edge
whose ends lie in the same joined junction is *inside* it (no SUMO edge: crossing the junction
covers it). Core edges without either, or much longer or shorter than their fragment, are
listed in :class:`MapReport`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import heapq
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from relied.env import netcache
from relied.env.network import DRIVABLE_HIGHWAYS, CityNetwork

#: Bump when the options or the mapping change.
SUMO_BUILD = 3

#: netconvert options, each with why (see docs/environment.md, "SUMO").
NETCONVERT_OPTIONS: tuple[str, ...] = (
    # only the core's drivable highway classes: both simulators see the same streets
    "--keep-edges.by-type", ",".join(f"highway.{h}" for h in sorted(DRIVABLE_HIGHWAYS)),
    # one SUMO junction per real intersection: OSM draws a dual carriageway crossing as 2-4
    # nodes metres apart; unjoined, each is a priority junction with no queue room between
    # them and SUMO micro deadlocks (most of its teleports were "yield"/"jam" at such nodes)
    "--junctions.join", "true",
    # joined ids list every OSM node (cluster_<id>_<id>...), never "#N more": the mapping
    # reads core nodes back from them
    "--max-join-ids", "1000",
    # traffic_signals nodes on the approaches of an intersection make one signal at it ...
    "--tls.guess-signals", "true",
    # ... and signals a few metres apart run one program (no green into a red)
    "--tls.join", "true",
    # a signal on a straight road with no crossing traffic (pedestrian lights) is dropped
    "--tls.discard-simple", "true",
    # roundabouts (priority to the circulating traffic) and motorway ramps as such
    "--roundabouts.guess", "true",
    "--ramps.guess", "true",
    # simple junction corners: shorter internal lanes, no geometry artefacts
    "--junctions.corner-detail", "0",
    # geometry nodes stay nodes: removing them would merge away junctions the core has
    "--geometry.remove", "false",
    "--remove-edges.isolated", "true",
    "--osm.all-attributes", "false",
    "--no-warnings", "true",
)

#: Second pass, on the first pass's net: the core's turns that netconvert left out, given
#: lane to lane with ``--connection-files`` (read at the joined junctions; on the OSM input
#: they would refer to junctions that joining removes). Junction shapes as in the first pass.
TURN_PASS_OPTIONS: tuple[str, ...] = ("--junctions.corner-detail", "0", "--no-warnings", "true")

#: A fragment is "length mismatched" when it differs from its core edge by more than this
#: share and :data:`LENGTH_SLACK_M`.
LENGTH_TOLERANCE, LENGTH_SLACK_M = 0.25, 15.0


class SumoError(RuntimeError):
    """SUMO missing, netconvert failing, or a SUMO run that cannot go on; one line."""


def require_sumo():
    """The ``sumo`` wheel module (binaries) or a one-line install hint."""
    try:
        import sumo
    except ImportError:
        raise SumoError("SUMO is not installed: pip install 'relied[sumo]'") from None
    return sumo


def sumo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eclipse-sumo")
    except PackageNotFoundError:
        raise SumoError("SUMO is not installed: pip install 'relied[sumo]'") from None


def _plain_osm(source: Path, folder: Path) -> Path:
    """``source`` as plain OSM XML (netconvert does not read ``.bz2``)."""
    name = source.name.lower()
    if name.endswith(".graphml"):
        raise SumoError(f"the SUMO backend needs the city's OSM XML file, not '{source.name}' "
                        "(GraphML); use a shipped city or an .osm/.osm.bz2/.osm.gz file")
    opener = bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz") else open
    out = folder / "city.osm"
    with opener(source, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def sumo_net_path(net: CityNetwork, source: Path) -> Path:
    """Where the SUMO net of ``net`` (built from ``source``) is cached."""
    digest = netcache.source_sha256(source)
    parts = (*NETCONVERT_OPTIONS, *TURN_PASS_OPTIONS, sumo_version(), str(SUMO_BUILD))
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]
    entry = netcache.entry_path(net.name, digest)
    return entry.with_name(f"{entry.stem}.sumo{SUMO_BUILD}-{key}.net.xml")


def _netconvert(sumo, inputs: list[str], out: Path, source: Path,
                options: tuple[str, ...]) -> Path:
    cmd = [str(Path(sumo.SUMO_HOME) / "bin" / "netconvert"), *inputs, "-o", str(out), *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "rror" in ln]
        why = (lines[0] if lines else f"exit status {proc.returncode}").strip()[:200]
        raise SumoError(f"netconvert could not build a SUMO network from '{source}' "
                        f"({why}); check or re-export the OSM file")
    return out


def build_sumo_net(net: CityNetwork, source: Path, use_cache: bool = True) -> Path:
    """Run netconvert on ``source`` (the OSM file ``net`` was built from), cached; returns the
    ``.net.xml`` path. Two passes: the second adds, with ``--connection-files``, the turns the
    core allows that netconvert left out (:meth:`SumoNetwork.missing_connections`).
    :class:`SumoError` with netconvert's first error line on failure."""
    sumo = require_sumo()
    source = Path(source)
    target = sumo_net_path(net, source)
    if use_cache and target.is_file() and target.stat().st_size > 0:
        return target
    with tempfile.TemporaryDirectory(prefix="relied-netconvert-") as tmp:
        osm = _plain_osm(source, Path(tmp))
        out = _netconvert(sumo, ["--osm-files", str(osm)], Path(tmp) / "guessed.net.xml",
                          source, NETCONVERT_OPTIONS)
        missing = SumoNetwork(net, out).missing_connections()
        if missing:
            con = Path(tmp) / "core-turns.con.xml"
            con.write_text(connections_xml(missing))
            out = _netconvert(sumo, ["--sumo-net-file", str(out)], Path(tmp) / "city.net.xml",
                              source, TURN_PASS_OPTIONS + ("--connection-files", str(con)))
        data = out.read_bytes()
    if not use_cache or not netcache.atomic_write_bytes(target, data):
        keep = Path(tempfile.mkdtemp(prefix="relied-sumo-")) / target.name
        keep.write_bytes(data)
        return keep
    return target


def connections_xml(rows: list[tuple[str, str, int, int]]) -> str:
    """A netconvert connection file (``--connection-files``): one lane-to-lane connection
    per ``(from, to, from_lane, to_lane)``."""
    body = "".join(f"    <connection from={quoteattr(a)} to={quoteattr(b)} "
                   f'fromLane="{fl}" toLane="{tl}"/>\n' for a, b, fl, tl in rows)
    return f"<connections>\n{body}</connections>\n"


@dataclass
class MapReport:
    """What of the core's network maps onto SUMO: core edges without a fragment, fragments of
    a very different length, and turns between mapped core edges that SUMO does not allow."""

    core_edges: int
    mapped_edges: int
    unmapped: list[int] = field(default_factory=list)
    length_mismatch: list[int] = field(default_factory=list)
    inside: int = 0
    turns: int = 0
    turns_missing: int = 0

    def summary(self) -> dict:
        return {"core_edges": self.core_edges, "mapped_edges": self.mapped_edges,
                "unmapped_edges": len(self.unmapped), "inside_joined_junctions": self.inside,
                "length_mismatch": len(self.length_mismatch),
                "turns": self.turns, "turns_missing_in_sumo": self.turns_missing}

    def line(self) -> str:
        return (f"{self.mapped_edges}/{self.core_edges} core edges map to SUMO "
                f"({self.inside} inside joined junctions, {len(self.unmapped)} do not, "
                f"{len(self.length_mismatch)} with a length off by "
                f">{LENGTH_TOLERANCE:.0%}); {self.turns - self.turns_missing}/{self.turns} "
                "turns allowed in SUMO")


class SumoNetwork:
    """The SUMO net (normal edges, lengths, free-flow times, connections) and its mapping onto
    a :class:`CityNetwork`: ``fragments[e]`` (SUMO edge indices, empty if unmapped),
    ``sumo_to_core`` (core edge of each SUMO edge, -1 if none)."""

    def __init__(self, net: CityNetwork, path: Path):
        self.net, self.path = net, Path(path)
        self._read(self.path)
        self._map()

    def _read(self, path: Path) -> None:
        ids, frm, to, length, speed, n_lanes = [], [], [], [], [], []
        succ: list[tuple[str, str]] = []
        junctions: list[str] = []
        try:
            for _, el in ET.iterparse(path):
                if el.tag == "edge" and el.get("function") is None:
                    lanes = el.findall("lane")
                    ids.append(el.get("id"))
                    frm.append(el.get("from"))
                    to.append(el.get("to"))
                    length.append(float(lanes[0].get("length")))
                    speed.append(max(float(ln.get("speed")) for ln in lanes))
                    n_lanes.append(len(lanes))
                    el.clear()
                elif el.tag == "connection" and not el.get("from", "").startswith(":"):
                    succ.append((el.get("from"), el.get("to")))
                elif el.tag == "junction":
                    if el.get("type") != "internal":
                        junctions.append(el.get("id"))
                    el.clear()
        except (ET.ParseError, TypeError, ValueError, IndexError) as exc:
            raise SumoError(f"SUMO network '{path}' is unreadable ({type(exc).__name__}); "
                            "delete it to rebuild") from None
        self.edge_ids = ids
        # the SUMO junction of each OSM node: its own id, or the joined cluster holding it
        self.junction_of: dict[str, str] = {}
        for j in junctions:
            members = j[len("cluster_"):].split("_") if j.startswith("cluster_") else [j]
            for m in members:
                self.junction_of[m] = j
        self.index = {e: i for i, e in enumerate(ids)}
        self.edge_from, self.edge_to = frm, to
        self.length_m = np.asarray(length)
        self.n_lanes = np.asarray(n_lanes, dtype=np.int64)
        self.freeflow_s = self.length_m / np.maximum(np.asarray(speed), 0.1)
        self.succ: list[set[int]] = [set() for _ in ids]
        for a, b in succ:
            if a in self.index and b in self.index:
                self.succ[self.index[a]].add(self.index[b])
        self.pred: list[set[int]] = [set() for _ in ids]
        for a, nxt in enumerate(self.succ):
            for b in nxt:
                self.pred[b].add(a)

    def _fragment(self, u: str, v: str, core_junctions: set[str],
                  starts: dict[str, list[int]], want_m: float) -> list[int]:
        """Shortest connected SUMO edge chain from junction ``u`` to ``v`` through junctions
        without core nodes (Dijkstra on edges, bounded by 3x the core length)."""
        heap = [(self.length_m[s], s, (s,)) for s in starts.get(u, [])]
        heapq.heapify(heap)
        done: set[int] = set()
        limit = 3.0 * want_m + 100.0
        while heap:
            dist, s, chain = heapq.heappop(heap)
            if s in done or dist > limit:
                continue
            done.add(s)
            head = self.edge_to[s]
            if head == v:
                return list(chain)
            if head in core_junctions:
                continue
            for nxt in self.succ[s]:
                if nxt not in done:
                    heapq.heappush(heap, (dist + self.length_m[nxt], nxt, (*chain, nxt)))
        return []

    def _map(self) -> None:
        net = self.net
        junc = [self.junction_of.get(str(int(i)), "") for i in net.osm_ids]
        ids = {j: k for k, j in enumerate(sorted(set(junc) - {""}))}
        #: SUMO junction of each core node as an integer (-1: not in the SUMO net)
        self.node_junction = np.array([ids.get(j, -1) for j in junc], dtype=np.int64)
        core_junctions = set(ids)
        starts: dict[str, list[int]] = {}
        for i, f in enumerate(self.edge_from):
            starts.setdefault(f, []).append(i)
        self.fragments: list[list[int]] = []
        report = MapReport(core_edges=net.n_edges, mapped_edges=0)
        self.sumo_to_core = np.full(len(self.edge_ids), -1, dtype=np.int64)
        src, dst = self.node_junction[net.edge_src], self.node_junction[net.edge_dst]
        #: core edges inside one joined junction (no SUMO edge; crossing it covers them)
        self.inside = (src == dst) & (src >= 0)
        for e in range(net.n_edges):
            u, v = junc[net.edge_src[e]], junc[net.edge_dst[e]]
            frag = [] if self.inside[e] or not u or not v else self._fragment(
                u, v, core_junctions, starts, float(net.length_m[e]))
            self.fragments.append(frag)
            if self.inside[e]:
                report.mapped_edges += 1
                report.inside += 1
                continue
            if not frag:
                report.unmapped.append(e)
                continue
            report.mapped_edges += 1
            got = float(self.length_m[frag].sum())
            if abs(got - net.length_m[e]) > max(LENGTH_TOLERANCE * net.length_m[e],
                                                LENGTH_SLACK_M):
                report.length_mismatch.append(e)
            for s in frag:
                if self.sumo_to_core[s] < 0:
                    self.sumo_to_core[s] = e
        # SUMO drives each mapped edge at the core's free-flow speed (set by SumoCore)
        core_speed = net.length_m / net.freeflow_s
        on = self.sumo_to_core >= 0
        self.speed = np.where(on, core_speed[np.maximum(self.sumo_to_core, 0)],
                              self.length_m / self.freeflow_s)
        self.freeflow_s = self.length_m / self.speed
        #: core edges with a SUMO fragment (``real``) or inside a junction (``mapped``)
        self.real = np.array([bool(f) for f in self.fragments])
        self.mapped = self.real | self.inside
        self.first = np.array([f[0] if f else -1 for f in self.fragments], dtype=np.int64)
        self.last = np.array([f[-1] if f else -1 for f in self.fragments], dtype=np.int64)
        self.sumo_ff = np.array([self.freeflow_s[f].sum() if f else 0.0 for f in self.fragments])
        self._reach: dict[int, np.ndarray] = {}
        for e in np.flatnonzero(self.real).tolist():  # turns the core allows at each head
            for o in self.core_turns(e):
                report.turns += 1
                if not self.can_take(int(self.last[e]), int(o), -1):
                    report.turns_missing += 1
        self.report = report

    def core_turns(self, e: int) -> np.ndarray:
        """Core edges a vehicle at the head of core edge ``e`` may take: the core's rule, every
        out-edge but the one straight back unless it is the only way on."""
        net = self.net
        out = net.out_edges(int(net.edge_dst[e]))
        back = net.edge_dst[out] == net.edge_src[e]
        return out[~back] if (~back).any() else out

    def _beyond(self, e: int, seen: frozenset = frozenset()) -> set[int]:
        """Core edges with a fragment that a vehicle at the head of core edge ``e`` can turn
        into (the core's rule), crossing the core edges inside a joined junction."""
        net, found = self.net, set()
        for o in self.core_turns(e).tolist():
            if self.real[o]:
                found.add(o)
            elif self.inside[o] and int(net.edge_dst[o]) not in seen:
                found |= self._beyond(o, seen | {int(net.edge_src[o])})
        return found

    def missing_connections(self) -> list[tuple[str, str, int, int]]:
        """``(from, to, from_lane, to_lane)`` of the turns the core allows that SUMO does not
        connect: from the last SUMO edge of a core edge to the first of each core edge it can
        turn into (through a joined junction: the first beyond the core edges inside it). A
        left turn (by the core nodes' positions) runs between the leftmost lanes, any other
        between the rightmost (netconvert drops a connection given without lanes)."""
        net, ids, rows = self.net, self.edge_ids, set()
        for e in np.flatnonzero(self.real).tolist():
            a = int(self.last[e])
            for o in self._beyond(e):
                b = int(self.first[o])
                if b in self.succ[a]:
                    continue
                u, v = net.edge_src[e], net.edge_dst[e]
                w, x = net.edge_src[o], net.edge_dst[o]
                cross = ((net.lon[v] - net.lon[u]) * (net.lat[x] - net.lat[w])
                         - (net.lat[v] - net.lat[u]) * (net.lon[x] - net.lon[w]))
                left = cross > 0
                rows.add((ids[a], ids[b], int(self.n_lanes[a] - 1) if left else 0,
                          int(self.n_lanes[b] - 1) if left else 0))
        return sorted(rows)

    def exits(self, node: int) -> np.ndarray:
        """Core out-edges of ``node`` that have a SUMO fragment (leave its junction)."""
        out = self.net.out_edges(node)
        return out[self.real[out]]

    def can_take(self, road: int, e: int, dest: int, seen: frozenset = frozenset()) -> bool:
        """A vehicle on SUMO edge ``road`` (-1: not inserted yet) can take core edge ``e``
        and still reach core node ``dest`` (-1: any). An edge inside a joined junction is
        taken when some way on through the junction is (no core node visited twice)."""
        net = self.net
        if self.inside[e]:
            w = int(net.edge_dst[e])
            if w in seen:
                return False
            return any(self.can_take(road, int(o), dest, seen | {int(net.edge_src[e])})
                       for o in net.out_edges(w) if self.mapped[o])
        if not self.real[e] or (road >= 0 and self.first[e] not in self.succ[road]):
            return False
        return dest < 0 or self.arrives(int(self.last[e]), dest)

    def arrives(self, road: int, dest: int) -> bool:
        """SUMO edge ``road`` ends at the junction of ``dest`` or can reach it."""
        if self.node_junction[int(self.net.edge_dst[self.sumo_to_core[road]])] == \
                self.node_junction[dest]:
            return True
        return bool(self.reaches(dest)[road])

    def turn_ok(self, came: int, to: int) -> bool:
        """SUMO connects core edge ``came`` to core edge ``to`` (both with fragments)."""
        return bool(self.real[came] and self.real[to]
                    and self.first[to] in self.succ[self.last[came]])

    def targets(self, dest: int) -> np.ndarray:
        """SUMO edges that end at the junction of core node ``dest`` (last of a core edge)."""
        into = (self.node_junction[self.net.edge_dst] == self.node_junction[dest]) & self.real
        return np.unique(self.last[into])

    def reaches(self, dest: int) -> np.ndarray:
        """Bool per SUMO edge: a vehicle on it can still reach core node ``dest`` (reverse
        search over SUMO's connections from :meth:`targets`)."""
        if dest not in self._reach:
            ok = np.zeros(len(self.edge_ids), dtype=bool)
            todo = self.targets(dest).tolist()
            ok[todo] = True
            while todo:
                s = todo.pop()
                for p in self.pred[s]:
                    if not ok[p]:
                        ok[p] = True
                        todo.append(p)
            self._reach[dest] = ok
        return self._reach[dest]


def load_sumo_network(net: CityNetwork, source: Path, use_cache: bool = True) -> SumoNetwork:
    """The mapped SUMO network of ``net`` built from its OSM ``source`` file."""
    return SumoNetwork(net, build_sumo_net(net, source, use_cache))
