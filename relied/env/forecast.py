"""Traffic forecasts: the time-dependent edge travel times a scenario is expected to produce.

A forecast is measured, not assumed: the scenario is simulated once (background traffic as in
it, the learners on given routes, free-flow shortest paths by default) and each edge's travel
time in each ``bin_s`` window is the mean experienced traversal time (queue included) of the
vehicles that entered it then; free flow where none did. The expert planners route on it (the
offline planner directly, an LLM through its tools and the delayed corridors in its task), and
the dynamic user equilibrium iterates it (:mod:`relied.env.equilibrium`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relied.env.core import RoutingCore
from relied.env.network import CityNetwork
from relied.env.policies import BatchPolicy, RoutePolicy, ShortestPathPolicy
from relied.env.scenario import Scenario


def drive(core: RoutingCore, policy: BatchPolicy) -> np.ndarray:
    """Reset ``core`` and run ``policy`` to the end without building observations (a run read
    through its traversals and returns: the same trips as with ``step``); the learners'
    returns."""
    core.reset()
    returns = np.zeros(core.n)
    while not core.done:
        returns += core.advance(policy(core))[0]
    return returns


def edge_times(core: RoutingCore, bin_s: float) -> np.ndarray:
    """``(n_edges, n_bins)`` mean experienced traversal time by entry-time bin (free flow where
    no vehicle entered); needs a core run with ``record_traversals=True``."""
    net = core.net
    bins = int(np.ceil(core.end_s / bin_s)) + 1
    total = np.zeros((net.n_edges, bins))
    count = np.zeros((net.n_edges, bins))
    if core.traversals:
        _, edge, entered, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
        b = np.minimum((entered // bin_s).astype(np.int64), bins - 1)
        np.add.at(total, (edge, b), left - entered)
        np.add.at(count, (edge, b), 1)
    free = np.broadcast_to(net.freeflow_s[:, None], total.shape)
    return np.where(count > 0, total / np.maximum(count, 1), free)


@dataclass(frozen=True)
class TrafficForecast:
    """``times[e, b]``: expected seconds to traverse edge ``e`` when entering it in window
    ``b`` (``[b * bin_s, (b + 1) * bin_s)``; the last window holds for later times)."""

    times: np.ndarray
    bin_s: float
    freeflow_s: np.ndarray

    @classmethod
    def simulate(cls, net: CityNetwork, scenario: Scenario,
                 routes: Sequence[Sequence[int]] | None = None,
                 bin_s: float = 60.0) -> TrafficForecast:
        """Measure the forecast by simulating ``scenario`` once (learners on ``routes``, or on
        free-flow shortest paths)."""
        core = RoutingCore(net, scenario, record_traversals=True)
        drive(core, ShortestPathPolicy() if routes is None
              else RoutePolicy(core, [list(r) for r in routes]))
        return cls(edge_times(core, bin_s), float(bin_s), net.freeflow_s.copy())

    def at(self, edges: np.ndarray | int, t: np.ndarray | float) -> np.ndarray:
        """Expected traversal seconds of ``edges`` entered at times ``t``."""
        b = np.minimum((np.asarray(t) // self.bin_s).astype(np.int64), self.times.shape[1] - 1)
        return self.times[edges, np.maximum(b, 0)]

    def route_time(self, edges: Sequence[int], depart_s: float) -> float:
        """Expected seconds to drive ``edges`` in order, leaving at ``depart_s``."""
        t = float(depart_s)
        for e in edges:
            t += float(self.at(int(e), t))
        return t - float(depart_s)

    def mean_delay(self) -> np.ndarray:
        """``(n_edges,)`` expected delay over free flow, averaged over the windows."""
        return np.maximum(self.times - self.freeflow_s[:, None], 0.0).mean(axis=1)

    def digest(self) -> str:
        """Content hash (part of the expert cache key)."""
        h = hashlib.sha256(np.ascontiguousarray(np.round(self.times, 3)).tobytes())
        h.update(repr(self.bin_s).encode())
        return h.hexdigest()[:16]
