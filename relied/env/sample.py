"""A sample of a fleet on a network with scaled capacities: the standard way agent-based
transport simulators run a large demand cheaply (MATSim's ``flowCapacityFactor`` and
``storageCapacityFactor``, SUMO's ``--scale``).

A share ``factor`` of the vehicles is simulated and every edge's saturation flow, storage
and BPR capacity are multiplied by ``factor`` in a copy of the network
(:func:`scaled_network`), so each simulated vehicle stands for ``1 / factor`` of them: a
queue discharges ``factor`` times as many vehicles per second and holds ``factor`` times as
many, and the delays and fills a vehicle meets are those of the whole fleet in expectation.
The queue model's gridlock release is a rate too: a vehicle held ``stuck_time_s`` at the head
of a queue by a full next edge enters anyway, so a blocked queue releases one vehicle per
stuck time. The sample divides the stuck time by ``factor`` (``SampleInfo.stuck_time_scaled``),
so a blocked queue releases ``factor`` times as many vehicles per second, like every other
capacity, and a head that waits one (``1 / factor`` times longer) discharge of its next edge
is not forced in. With the fleet's stuck time the sample forced 1.6-3.4 times as many entries
per vehicle as the whole fleet and its learners were 2.6-11.6% too fast on a gridlocking fleet
of 10,000 learners, 0.0-3.0% with it (``benchmarks/results/expert_scale_sample_stuck.md``;
records written before the field rebuild with the fleet's stuck time, as they were
simulated). Not corrected: on a fleet that queues without gridlock (aguascalientes-peak)
samples are too slow (same file), most likely from the discharge's granularity (a sampled
vehicle's headway is ``1 / factor`` times the fleet's), which only the core's discharge could
change.
What the learners observe is scale-free: the delay an entering vehicle would meet is the
queue times the headway (``count / (saturation * factor)``), the fill is ``count / (storage
* factor)``, BPR reads ``others / (capacity * factor)`` (:mod:`relied.env.core`). Limits: an
edge still admits a vehicle while fewer than ``ceil(storage * factor)`` are on it, so very
short edges hold at least one vehicle (relatively more than in the whole fleet when
``storage * factor < 1``), and the sample's travel times have sampling noise (the benchmark
``benchmarks/expert_scale.py --accuracy`` measures both against the whole fleet;
``--storage-rounding`` the rounding alone).

:func:`sample_fleet` keeps the learners asked for (the expert team's demonstrated agents)
and draws the rest so that the learners and the background traffic each keep their share of
the target: a systematic sample over departure order (one seeded random start), so the
sample's departures spread over the peak as the fleet's do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from relied.env.network import CityNetwork
from relied.env.scenario import Scenario

SAMPLE_STREAM = 0x5A3B1F  # the fleet sample's random stream, apart from the scenario's draws
#: the most vehicles the expert team simulates before it samples the fleet (TeamConfig and
#: TrainConfig ``sim_vehicles``)
DEFAULT_SIM_VEHICLES = 15_000


class SampleInfo(BaseModel):
    """How a run was simulated on a sample of the fleet (stored with a demonstration batch):
    the simulated learners (agent ids) and background vehicles (indices among the scenario's
    background vehicles), and the capacity ``factor`` of the network they drove on."""

    model_config = ConfigDict(extra="forbid")

    target_vehicles: int = Field(ge=1, description="the most vehicles simulated "
                                 "(TeamConfig.sim_vehicles)")
    factor: float = Field(gt=0, le=1, description="simulated / all vehicles: the scale of "
                          "every edge's saturation flow, storage and capacity")
    learners: list[int] = Field(description="the simulated learners (agent ids, sorted); "
                                "position k of the sample is learner learners[k]")
    background: list[int] = Field(description="the simulated background vehicles (indices "
                                  "among the scenario's background vehicles, sorted)")
    stuck_time_scaled: bool = Field(False, description="the sample's stuck time is the "
                                    "fleet's divided by factor (sample_fleet's samples); "
                                    "False: the fleet's, as samples recorded before this "
                                    "field were simulated")


def scaled_network(net: CityNetwork, factor: float) -> CityNetwork:
    """A copy of ``net`` whose saturation flows, storages and capacities are ``factor`` times
    the original's (``net`` is untouched). Its name says the factor, so that nothing keyed by
    a network's name (the critic's caches) takes one for the other."""
    if not 0 < factor <= 1:
        raise ValueError(f"a capacity factor must lie in (0, 1], not {factor}")
    return dataclasses.replace(net, name=f"{net.name}@{factor:.6g}",
                               saturation_vps=net.saturation_vps * factor,
                               storage=net.storage * factor, capacity=net.capacity * factor)


@dataclass(frozen=True)
class FleetSample:
    """A sampled fleet: ``net`` (the scaled copy), ``scenario`` (the simulated vehicles,
    resolved; its learner ``k`` is the fleet's learner ``learners[k]``) and ``info``."""

    net: CityNetwork
    scenario: Scenario
    info: SampleInfo

    @classmethod
    def of(cls, net: CityNetwork, scenario: Scenario, info: SampleInfo) -> FleetSample:
        """The sample ``info`` describes, of ``scenario`` on ``net`` (the whole fleet's: e.g.
        to simulate a stored batch again as it was simulated)."""
        sc = scenario.resolve(net)
        learners, background = info.learners, info.background
        if (learners and not 0 <= learners[0] <= learners[-1] < sc.n_agents) or \
                (background and not 0 <= background[0] <= background[-1] < sc.n_background):
            raise ValueError("the sample names vehicles this scenario does not have")

        def take(values: list | None, idx: list[int]) -> list:
            return [values[i] for i in idx] if values is not None else []

        stuck = sc.stuck_time_s / info.factor if info.stuck_time_scaled else sc.stuck_time_s
        sampled = Scenario.model_validate({
            **sc.model_dump(), "n_agents": len(learners), "stuck_time_s": stuck,
            "background_share": len(background) / (len(learners) + len(background)),
            "origins": take(sc.origins, learners),
            "destinations": take(sc.destinations, learners),
            "departures_s": take(sc.departures_s, learners),
            "background_origins": take(sc.background_origins, background),
            "background_destinations": take(sc.background_destinations, background),
            "background_departures_s": take(sc.background_departures_s, background)})
        if sampled.n_background != len(background):  # (the share rounds back to the count)
            raise RuntimeError("the sampled background share does not give the sampled count")
        return cls(scaled_network(net, info.factor), sampled, info)

    @property
    def learners(self) -> np.ndarray:
        return np.asarray(self.info.learners, dtype=np.int64)

    def positions(self, agents: Sequence[int]) -> list[int]:
        """The sample positions of fleet learners ``agents`` (each must be simulated)."""
        at = np.searchsorted(self.learners, np.asarray(agents, dtype=np.int64))
        if at.size and (at.max() >= self.learners.size or
                        (self.learners[at] != np.asarray(agents)).any()):
            raise ValueError("some of these agents are not in the simulated sample")
        return at.tolist()

    def routes(self, fleet_routes: Sequence[Sequence[int]]) -> list[list[int]]:
        """The simulated learners' routes out of one route per fleet learner."""
        return [list(fleet_routes[a]) for a in self.info.learners]


def _systematic(order: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``order``'s entries, evenly spaced along it from one random start."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    picks = np.floor((np.arange(k) + rng.random()) * order.size / k).astype(np.int64)
    return order[np.minimum(picks, order.size - 1)]


def sample_fleet(net: CityNetwork, scenario: Scenario, target_vehicles: int,
                 keep: Sequence[int] = (), seed: int = 0) -> FleetSample | None:
    """A sample of about ``target_vehicles`` of ``scenario``'s vehicles on ``net`` scaled
    alike (module docstring), or None when the fleet has no more vehicles than that (nothing
    to sample). ``keep``: learners that are always simulated; the other learners fill the
    learners' share of the target (none when ``keep`` exceeds it) and background vehicles
    the rest, each by a systematic sample over departure order seeded by ``seed``."""
    sc = scenario.resolve(net)
    total = sc.n_vehicles
    if total <= target_vehicles:
        return None
    n, nb = sc.n_agents, sc.n_background
    keep = np.unique(np.asarray(keep, dtype=np.int64))
    if keep.size and (keep[0] < 0 or keep[-1] >= n):
        raise ValueError(f"learners to keep must lie in 0..{n - 1}")
    share = target_vehicles / total
    m = max(keep.size, int(round(share * n)), 1)
    b = min(nb, max(0, target_vehicles - m))
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    rest = np.setdiff1d(np.arange(n), keep)
    dep = np.asarray(sc.departures_s)
    rest = rest[np.argsort(dep[rest], kind="stable")]
    learners = np.sort(np.concatenate([keep, _systematic(rest, m - keep.size, rng)]))
    bdep = np.asarray(sc.background_departures_s or [], dtype=np.float64)
    background = np.sort(_systematic(np.argsort(bdep, kind="stable"), b, rng))
    info = SampleInfo(target_vehicles=target_vehicles,
                      factor=(learners.size + background.size) / total,
                      learners=learners.tolist(), background=background.tolist(),
                      stuck_time_scaled=True)
    return FleetSample.of(net, sc, info)
