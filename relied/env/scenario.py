"""The :class:`Scenario`: one JSON-serialisable description of a routing problem.

Experts, environment and evaluation share it. Origins and destinations are stored as OSM node
ids (stable across network builds); :meth:`Scenario.resolve` samples them reproducibly from the
seed when they are not given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from relied.env.network import CityNetwork


class Scenario(BaseModel):
    """City, demand and simulation settings of one routing problem.

    Demand: ``n_agents`` learning vehicles plus background vehicles that do not learn, so that
    learners are a share ``1 - background_share`` of all traffic (their penetration rate).
    Background vehicles follow free-flow shortest paths or a logit route choice. Departures are
    uniform over ``[0, departure_window_s]`` (the peak window) unless given.

    Traffic (``traffic_model``): ``"queue"`` (default) is a spatial queue per edge: free-flow
    traversal, then FIFO discharge at the edge's saturation flow, entry refused while the next
    edge is full (queues spill back); a vehicle held at the head of a queue for
    ``stuck_time_s`` enters anyway (gridlock release). ``"bpr"`` (comparison only): the
    traversal time is fixed at entry, ``t0 * min(1 + bpr_alpha (others/capacity)^bpr_beta,
    max_slowdown)``, with no queue. See ``relied/env/core.py``.

    ``signals`` (off by default): fixed-time traffic signals at the junctions OSM marks as
    signalised (90 s cycle, netconvert's default plans; :mod:`relied.env.signals`): a vehicle
    crossing one waits for green. Off, a scenario serialises exactly as before the field
    existed (its JSON, digests and prompts are unchanged).

    Reward per learner: ``-(seconds of its trip that passed) / time_scale_s`` each step,
    ``+arrival_bonus`` on arrival, ``-timeout_penalty`` if not arrived at the horizon; the
    rewards of a trip sum exactly to minus its travel time in ``time_scale_s`` units.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    city: str = "aguascalientes"
    n_agents: int = Field(20, ge=1, le=100_000, description="learning vehicles")
    seed: int = Field(0, ge=0)
    dt_s: float = Field(1.0, gt=0, le=60, description="step (s); the queue model converges "
                        "at 1 s (see docs/environment.md)")
    horizon_s: float = Field(1800.0, gt=0, le=86_400)
    min_trip_m: float = Field(600.0, ge=0)
    departure_window_s: float = Field(0.0, ge=0, description="departures uniform in "
                                      "[0, window]; must end before the horizon")
    traffic_model: Literal["queue", "bpr"] = "queue"
    stuck_time_s: float = Field(60.0, gt=0, description="queue model: a vehicle held this long "
                                "at the head of a queue by a full next edge enters anyway")
    background_share: float = Field(0.0, ge=0, lt=1, description="share of all vehicles that "
                                    "are background traffic, in [0, 1)")
    background_choice: Literal["shortest-path", "logit"] = "shortest-path"
    logit_scale_s: float = Field(30.0, gt=0, description="logit route choice: scale of the "
                                 "detour (s) at each intersection")
    hotspot_share: float = Field(0.0, ge=0, le=1, description="share of trips that end "
                                 "within hotspot_radius_m of the hotspot (a peak's attractor)")
    hotspot_node: int | None = Field(None, description="OSM node id of the hotspot centre; "
                                     "default: the node nearest the network's centroid")
    hotspot_radius_m: float = Field(400.0, gt=0)
    signals: bool = Field(False, description="fixed-time traffic signals at OSM-signalised "
                          "junctions (90 s cycle); off: no signals, as before")
    bpr_alpha: float = Field(0.15, ge=0)
    bpr_beta: float = Field(4.0, ge=0)
    max_slowdown: float = Field(10.0, ge=1, description="BPR: cap of travel time / free flow")
    time_scale_s: float = Field(60.0, gt=0)
    arrival_bonus: float = Field(5.0, ge=0)
    timeout_penalty: float = Field(5.0, ge=0)
    origins: list[int] | None = Field(None, description="OSM node ids, one per agent")
    destinations: list[int] | None = Field(None, description="OSM node ids, one per agent")
    departures_s: list[float] | None = None
    background_origins: list[int] | None = None
    background_destinations: list[int] | None = None
    background_departures_s: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for name in ("origins", "destinations", "departures_s"):
            value = getattr(self, name)
            if value is not None and len(value) != self.n_agents:
                raise ValueError(f"{name} has {len(value)} entries for {self.n_agents} agents")
        m = self.n_background
        for name in ("background_origins", "background_destinations", "background_departures_s"):
            value = getattr(self, name)
            if value is not None and len(value) != m:
                raise ValueError(f"{name} has {len(value)} entries for {m} background vehicles")
        if self.departure_window_s >= self.horizon_s:
            raise ValueError(f"departure_window_s ({self.departure_window_s:g}) must be shorter "
                             f"than horizon_s ({self.horizon_s:g})")
        for name in ("departures_s", "background_departures_s"):
            value = getattr(self, name) or []
            if any(not (0 <= d < self.horizon_s) for d in value):
                raise ValueError(f"{name} must lie in [0, horizon_s={self.horizon_s:g})")
        return self

    @model_serializer(mode="wrap")
    def _without_default_signals(self, handler):
        """Leave ``signals`` out while it is off, so that every scenario written before the
        field existed keeps its JSON (and the digests taken of it)."""
        data = handler(self)
        if isinstance(data, dict) and not self.signals:
            data.pop("signals", None)
        return data

    @property
    def n_background(self) -> int:
        """Background vehicles: ``n_agents * share / (1 - share)``, rounded."""
        return int(round(self.n_agents * self.background_share / (1.0 - self.background_share)))

    @property
    def n_vehicles(self) -> int:
        return self.n_agents + self.n_background

    @property
    def n_steps(self) -> int:
        return int(np.ceil(self.horizon_s / self.dt_s))

    @property
    def reward_bound(self) -> float:
        """R_max: the largest absolute reward of one agent in one step."""
        return max(2 * self.dt_s / self.time_scale_s + self.arrival_bonus, self.timeout_penalty)

    def resolve(self, net: CityNetwork) -> Scenario:
        """Return a copy with every origin, destination and departure filled in.

        Sampling uses ``seed``: origins and destinations uniform over nodes, redrawn until the
        network distance is at least ``min_trip_m``; departures uniform over the window.
        Background trips come from their own stream of the same seed, so adding background
        traffic leaves the learners' trips unchanged.
        """
        update = {}
        for prefix, n, stream in (("", self.n_agents, 0), ("background_", self.n_background, 1)):
            o_key, d_key = f"{prefix}origins", f"{prefix}destinations"
            t_key = f"{prefix}departures_s"
            origins, dests, deps = getattr(self, o_key), getattr(self, d_key), getattr(self, t_key)
            rng = np.random.default_rng([self.seed, stream])
            if origins is None or dests is None:
                o, d = _sample_od(net, n, self.min_trip_m, rng, self._hotspot(net),
                                  self.hotspot_share)
                origins, dests = net.osm_ids[o].tolist(), net.osm_ids[d].tolist()
            else:
                index_of(net, origins)
                index_of(net, dests)
            if deps is None:
                deps = np.round(rng.uniform(0, self.departure_window_s, n), 1).tolist()
            update |= {o_key: origins, d_key: dests, t_key: deps}
        return self.model_copy(update=update)

    def _hotspot(self, net: CityNetwork) -> np.ndarray:
        """Node indices within ``hotspot_radius_m`` of the hotspot centre."""
        x, y = _xy(net)
        if self.hotspot_node is None:
            centre = int(np.argmin((x - x.mean()) ** 2 + (y - y.mean()) ** 2))
        else:
            centre = int(index_of(net, [self.hotspot_node])[0])
        near = np.hypot(x - x[centre], y - y[centre]) <= self.hotspot_radius_m
        return np.flatnonzero(near)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Scenario:
        return cls.model_validate_json(Path(path).read_text())


def index_of(net: CityNetwork, osm_ids: list[int] | np.ndarray) -> np.ndarray:
    """Contiguous node indices of ``osm_ids``; ``ValueError`` naming the first unknown id."""
    ids = np.asarray(osm_ids, dtype=np.int64)
    order = np.argsort(net.osm_ids)
    pos = np.searchsorted(net.osm_ids, ids, sorter=order)
    pos = np.clip(pos, 0, net.n_nodes - 1)
    idx = order[pos]
    bad = net.osm_ids[idx] != ids
    if bad.any():
        raise ValueError(f"node {int(ids[bad][0])} is not in the drivable network of "
                         f"'{net.name}'; use node ids of this city's network")
    return idx


def _xy(net: CityNetwork) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates in metres on a local tangent plane."""
    lat0 = np.deg2rad(net.lat.mean())
    x = np.deg2rad(net.lon - net.lon.mean()) * 6_371_000 * np.cos(lat0)
    y = np.deg2rad(net.lat - net.lat.mean()) * 6_371_000
    return x, y


def _sample_od(net: CityNetwork, n: int, min_trip_m: float, rng: np.random.Generator,
               hotspot: np.ndarray, hotspot_share: float):
    """Origins uniform over nodes; destinations uniform, or within ``hotspot`` for a share of
    trips; destinations redrawn until every trip is at least ``min_trip_m`` long."""
    from scipy.sparse.csgraph import dijkstra

    graph = net.sparse(net.length_m)
    origins = rng.integers(0, net.n_nodes, n)
    to_hotspot = rng.random(n) < hotspot_share

    def draw(k: int, hot: np.ndarray) -> np.ndarray:
        anywhere = rng.integers(0, net.n_nodes, k)
        near = hotspot[rng.integers(0, hotspot.size, k)] if hotspot.size else anywhere
        return np.where(hot, near, anywhere)

    dests = draw(n, to_hotspot)
    uniq, inv = np.unique(origins, return_inverse=True)
    dist = dijkstra(graph, indices=uniq)
    for _ in range(200):
        bad = dist[inv, dests] < max(min_trip_m, 1e-9)
        if not bad.any():
            return origins, dests
        dests[bad] = draw(int(bad.sum()), to_hotspot[bad])
    raise ValueError(f"could not sample trips of at least {min_trip_m:.0f} m in "
                     f"'{net.name}' (diameter too small); lower min_trip_m")
