"""SUMO (``pip install 'relied[sumo]'``) as the reference simulator, side by side with the core.

:func:`make_core` builds the simulator of a backend (``core``, ``sumo``, ``sumo-meso``) for a
loaded :class:`CityNetwork` and a Scenario; see ``docs/sumo.md``.
"""

from __future__ import annotations

from relied.env.core import RoutingCore
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario
from relied.env.sumo.network import MapReport, SumoError, SumoNetwork, load_sumo_network

BACKENDS: tuple[str, ...] = ("core", "sumo", "sumo-meso")

__all__ = ["BACKENDS", "MapReport", "SumoError", "SumoNetwork", "check_backend",
           "check_meso_junctions", "load_sumo_network", "make_core"]


def check_backend(backend: str) -> None:
    """``ValueError`` naming the backends for an unknown one."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")


def check_meso_junctions(meso_junctions: str | None, backend: str) -> str:
    """The meso junction model a command asked for (``None``: ``control``, the default);
    ``ValueError`` for an unknown one, or one given with a backend other than ``sumo-meso``."""
    from relied.env.sumo.core import MESO_JUNCTIONS

    if meso_junctions is None:
        return "control"
    if meso_junctions not in MESO_JUNCTIONS:
        raise ValueError(f"unknown --meso-junctions '{meso_junctions}'; choose "
                         f"{' or '.join(MESO_JUNCTIONS)}")
    if backend != "sumo-meso":
        raise ValueError(f"--meso-junctions applies to --backend sumo-meso only (got "
                         f"--backend {backend}); drop it or use --backend sumo-meso")
    return meso_junctions


def make_core(net: CityNetwork, scenario: Scenario, backend: str = "core",
              sumo_net: SumoNetwork | None = None, **kw) -> RoutingCore:
    """A :class:`RoutingCore` (``core``) or a SUMO-backed one (``sumo``: micro, ``sumo-meso``).
    The SUMO network is built from the scenario's city file unless ``sumo_net`` is given;
    ``signal_plans`` (``core``/``netconvert``): SUMO's traffic-light programs;
    ``meso_junctions`` (``control``/``green-split``): meso's junction model (SumoCore)."""
    check_backend(backend)
    signal_plans = kw.pop("signal_plans", "netconvert")
    meso_junctions = kw.pop("meso_junctions", "control")
    if backend == "core":
        return RoutingCore(net, scenario, **kw)
    from relied.env.cities import city_source
    from relied.env.sumo.core import SumoCore

    if sumo_net is None:
        source = city_source(scenario.city).path
        if source is None:
            raise SumoError(f"city '{scenario.city}' has no local OSM file for netconvert")
        sumo_net = load_sumo_network(net, source)
    mode = "meso" if backend == "sumo-meso" else "micro"
    return SumoCore(net, scenario, sumo_net, mode=mode,
                    record_routes=kw.get("record_routes", False),
                    signal_plans=signal_plans, meso_junctions=meso_junctions)
