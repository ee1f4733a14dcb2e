"""AutoGen function tools of the planner: questions about the city it can ask while planning.

Tool answers are JSON text; bad references give an ``error:`` answer, never an exception.
"""

from __future__ import annotations

import json

import numpy as np
from autogen_core.tools import FunctionTool

from relied.agents.view import CityView, PlanRouteError


def planner_tools(view: CityView, edge_load: np.ndarray | None = None) -> list[FunctionTool]:
    """``shortest_path``, ``route_travel_time`` and ``corridor_load`` over ``view``."""
    load = np.zeros(view.net.n_edges) if edge_load is None else edge_load

    def shortest_path(from_ref: str, to_ref: str) -> str:
        """Free-flow shortest path between two node refs (landmark 'L3' or OSM node id)."""
        try:
            route = view.shortest(view.resolve(from_ref), view.resolve(to_ref))
        except PlanRouteError as exc:
            return f"error: {exc}"
        return json.dumps({"route": [str(view.osm(n)) for n in route[:200]],
                           "freeflow_s": round(view.route_time(route), 1)})

    def route_travel_time(route: list[str]) -> str:
        """Free-flow travel time (s) of a route of node refs, and vehicles on its edges."""
        try:
            nodes = view.expand(route)
        except PlanRouteError as exc:
            return f"error: {exc}"
        edges = [view.net.edge_between(u, v) for u, v in zip(nodes[:-1], nodes[1:], strict=True)]
        return json.dumps({"freeflow_s": round(view.route_time(nodes), 1),
                           "vehicles_on_route": float(load[edges].sum()), "edges": len(edges)})

    def corridor_load(from_landmark: str, to_landmark: str) -> str:
        """Vehicles planned on edges from one landmark's zone into another's."""
        labels = {lab: k for k, lab in enumerate(view.labels)}
        if from_landmark not in labels or to_landmark not in labels:
            return f"error: use landmark ids L0..L{len(view.labels) - 1}"
        loads = view.corridor_loads(load)
        return json.dumps({"load": loads.get((labels[from_landmark], labels[to_landmark]), 0.0)})

    return [FunctionTool(f, description=f.__doc__ or f.__name__)
            for f in (shortest_path, route_travel_time, corridor_load)]
