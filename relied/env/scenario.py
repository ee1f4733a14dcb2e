"""The :class:`Scenario`: one JSON-serialisable description of a routing problem.

Experts, environment and evaluation share it. Origins and destinations are stored as OSM node
ids (stable across network builds); :meth:`Scenario.resolve` samples them reproducibly from the
seed when they are not given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from relied.env.network import CityNetwork


class Scenario(BaseModel):
    """City, agents, OD pairs and simulation settings of one routing problem.

    Traffic: an edge's travel time is ``t0 * (1 + bpr_alpha * (others / capacity) ** bpr_beta)``
    with ``others = max(occupancy - 1, 0)``
    (BPR form on occupancy, updated every step), capped at ``max_slowdown * t0`` (queues do not
    spill back; the cap stands for the jam speed). Reward per agent and step:
    ``-(seconds en route) / time_scale_s``, ``+arrival_bonus`` on arrival, ``-timeout_penalty``
    for agents not arrived when the horizon ends.
    """

    model_config = ConfigDict(extra="forbid")

    city: str = "aguascalientes"
    n_agents: int = Field(20, ge=1, le=100_000)
    seed: int = 0
    dt_s: float = Field(5.0, gt=0, le=60)
    horizon_s: float = Field(1800.0, gt=0)
    min_trip_m: float = Field(600.0, ge=0)
    departure_window_s: float = Field(0.0, ge=0, description="departures uniform in [0, window]")
    bpr_alpha: float = Field(0.15, ge=0)
    bpr_beta: float = Field(4.0, ge=0)
    max_slowdown: float = Field(10.0, ge=1, description="cap of travel time / free flow")
    time_scale_s: float = Field(60.0, gt=0)
    arrival_bonus: float = Field(5.0, ge=0)
    timeout_penalty: float = Field(5.0, ge=0)
    origins: list[int] | None = Field(None, description="OSM node ids, one per agent")
    destinations: list[int] | None = Field(None, description="OSM node ids, one per agent")
    departures_s: list[float] | None = None

    @model_validator(mode="after")
    def _lengths_match(self) -> Scenario:
        for name in ("origins", "destinations", "departures_s"):
            value = getattr(self, name)
            if value is not None and len(value) != self.n_agents:
                raise ValueError(f"{name} has {len(value)} entries for {self.n_agents} agents")
        return self

    @property
    def n_steps(self) -> int:
        return int(np.ceil(self.horizon_s / self.dt_s))

    @property
    def reward_bound(self) -> float:
        """R_max: the largest absolute reward of one agent in one step."""
        return max(2 * self.dt_s / self.time_scale_s + self.arrival_bonus, self.timeout_penalty)

    def resolve(self, net: CityNetwork) -> Scenario:
        """Return a copy with origins, destinations and departures filled in.

        Sampling uses ``seed``: origins and destinations uniform over nodes, redrawn until the
        free-flow network distance is at least ``min_trip_m``.
        """
        if self.origins is not None and self.destinations is not None:
            index_of(net, self.origins)
            index_of(net, self.destinations)
            if self.departures_s is not None:
                return self
        rng = np.random.default_rng(self.seed)
        if self.origins is None or self.destinations is None:
            o, d = _sample_od(net, self.n_agents, self.min_trip_m, rng)
            origins, destinations = net.osm_ids[o].tolist(), net.osm_ids[d].tolist()
        else:
            origins, destinations = self.origins, self.destinations
        departures = self.departures_s
        if departures is None:
            window = self.departure_window_s
            departures = np.round(rng.uniform(0, window, self.n_agents), 1).tolist()
        return self.model_copy(update={"origins": origins, "destinations": destinations,
                                       "departures_s": departures})

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


def _sample_od(net: CityNetwork, n: int, min_trip_m: float, rng: np.random.Generator):
    from scipy.sparse.csgraph import dijkstra

    graph = net.sparse(net.length_m)
    origins = rng.integers(0, net.n_nodes, n)
    dests = rng.integers(0, net.n_nodes, n)
    uniq, inv = np.unique(origins, return_inverse=True)
    dist = dijkstra(graph, indices=uniq)
    for _ in range(200):
        bad = dist[inv, dests] < max(min_trip_m, 1e-9)
        if not bad.any():
            return origins, dests
        dests[bad] = rng.integers(0, net.n_nodes, int(bad.sum()))
    raise ValueError(f"could not sample trips of at least {min_trip_m:.0f} m in "
                     f"'{net.name}' (diameter too small); lower min_trip_m")
