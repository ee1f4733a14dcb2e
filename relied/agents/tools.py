"""AutoGen function tools: the planner's questions about the city while planning, and the
chat's questions about a finished plan (routes, slowest agents, corridor loads, bound terms,
what a replan changed).

Tool answers are compact JSON text; bad references give an ``{"error": ...}`` answer, never
an exception. Routes are shown as waypoints with compact node ids (``n<index>``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from autogen_core.tools import FunctionTool

from relied.agents.plans import JointPlan
from relied.agents.view import CityView, PlanRouteError
from relied.env.core import RoutingCore
from relied.env.equilibrium import fastest_routes
from relied.env.forecast import TrafficForecast
from relied.env.scenario import index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import BoundTerms, Execution, execute, plan_bounds, reference_bound
from relied.experts.learners import UNTRAINED, Learners


def _tools(*functions: Callable[..., str]) -> list[FunctionTool]:
    return [FunctionTool(f, description=(f.__doc__ or f.__name__).strip()) for f in functions]


def planner_tools(view: CityView, edge_load: np.ndarray | None = None,
                  forecast: TrafficForecast | None = None) -> list[FunctionTool]:
    """``shortest_path``, ``route_travel_time`` and ``corridor_load`` over ``view``; times come
    from the traffic ``forecast`` when given (what the offline planner routes on), else free
    flow."""
    load = np.zeros(view.net.n_edges) if edge_load is None else edge_load
    net = view.net

    def edges_of(nodes: list[int]) -> list[int]:
        return [net.edge_between(u, v) for u, v in zip(nodes[:-1], nodes[1:], strict=True)]

    def shortest_path(from_ref: str, to_ref: str, depart_s: float = 0.0) -> str:
        """Fastest path between two node refs (landmark 'L3' or node 'n42') when leaving at
        depart_s (seconds into the scenario), on the traffic forecast; as waypoints."""
        try:
            u, v = view.resolve(from_ref), view.resolve(to_ref)
            route = view.shortest(u, v)
            if forecast is not None and u != v:
                found, _ = fastest_routes(net, forecast.times, forecast.bin_s, np.array([u]),
                                          np.array([v]), np.array([float(depart_s)]))
                route = found[0]
        except PlanRouteError as exc:
            return json.dumps({"error": str(exc)})
        answer = {"waypoints": [view.ref(n) for n in view.waypoints(route)],
                  "edges": len(route) - 1, "freeflow_s": round(view.route_time(route), 1)}
        if forecast is not None:
            answer["forecast_s"] = round(forecast.route_time(edges_of(route), depart_s), 1)
        return json.dumps(answer)

    def route_travel_time(route: list[str], depart_s: float = 0.0) -> str:
        """Free-flow and forecast travel time (s) of a route of node refs when leaving at
        depart_s, and vehicles of the other agents on its edges."""
        try:
            nodes = view.expand(route)
        except PlanRouteError as exc:
            return json.dumps({"error": str(exc)})
        edges = edges_of(nodes)
        answer = {"freeflow_s": round(view.route_time(nodes), 1),
                  "vehicles_on_route": float(load[edges].sum()), "edges": len(edges)}
        if forecast is not None:
            answer["forecast_s"] = round(forecast.route_time(edges, depart_s), 1)
        return json.dumps(answer)

    def corridor_load(from_landmark: str, to_landmark: str) -> str:
        """Vehicles expected on edges from one landmark's zone into another's."""
        labels = {lab: k for k, lab in enumerate(view.labels)}
        if from_landmark not in labels or to_landmark not in labels:
            return json.dumps({"error": f"use landmark ids L0..L{len(view.labels) - 1}"})
        loads = view.corridor_loads(load)
        return json.dumps({"load": loads.get((labels[from_landmark], labels[to_landmark]), 0.0)})

    return _tools(shortest_path, route_travel_time, corridor_load)


@dataclass
class PlanFacts:
    """A plan executed once in the simulator, and its bound terms for every agent (computed
    on first use) under the ``learners`` the critic judged it under (their current policy and
    trial update: bound version 5; :data:`~relied.experts.learners.UNTRAINED`: version 4);
    what the chat tools answer from. ``agents``: the agents the critic judged (the team's
    sample at scale; None: all).

    ``epsilon`` is the critic's absolute threshold (the verdict's ``epsilon``: ``bound.epsilon``
    is a ratio); when not given it is computed as the team does without learner behaviour
    (the ratio times the free-flow shortest-path plan's mean bound under ``learners``)."""

    core: RoutingCore
    view: CityView
    plan: JointPlan
    routes: list[list[int]]  # OSM ids per agent
    bound: BoundConfig
    verdict_text: dict
    epsilon: float | None = None
    learners: Learners = UNTRAINED
    agents: list[int] | None = None

    @cached_property
    def nodes(self) -> list[list[int]]:
        return [index_of(self.core.net, r).tolist() for r in self.routes]

    @cached_property
    def run(self) -> Execution:
        return execute(self.core.net, self.core.scenario, routes=self.nodes)

    @cached_property
    def travel_s(self) -> np.ndarray:
        """Seconds each agent spends on edges in the executed plan."""
        return (self.run.edges_by_step >= 0).sum(0) * self.core.scenario.dt_s

    @cached_property
    def edge_load(self) -> np.ndarray:
        load = np.zeros(self.core.net.n_edges)
        for r in self.nodes:
            for u, v in zip(r[:-1], r[1:], strict=True):
                load[self.core.net.edge_between(u, v)] += 1
        return load

    @cached_property
    def terms(self) -> BoundTerms:
        """Every agent's bound and its terms, as the critic computes them under
        :attr:`learners`, from the plan's execution."""
        lr = self.learners
        return plan_bounds(self.core.net, self.core.scenario, self.nodes, self.bound,
                           lr.policy_probs, lr.previous_probs, run=self.run, agents=self.agents,
                           trial_update=lr.trial_update)

    @cached_property
    def threshold(self) -> float:
        """The absolute epsilon an agent's bound is compared with."""
        if self.epsilon is not None:
            return self.epsilon
        lr = self.learners
        return self.bound.epsilon * reference_bound(
            self.core.net, self.core.scenario, self.bound, lr.policy_probs, lr.previous_probs,
            agents=self.agents, trial_update=lr.trial_update)


class ChatState:
    """The plan under discussion and the one before the last replan."""

    def __init__(self, facts: PlanFacts):
        self.facts, self.previous, self.variant = facts, None, 0

    def replace(self, facts: PlanFacts, variant: int) -> None:
        self.previous, self.facts, self.variant = self.facts, facts, variant


def chat_tools(state: ChatState) -> list[FunctionTool]:
    """Tools of the chat's answering agent over ``state`` (the current plan and the last)."""

    def agent_or_error(agent_id: int) -> str | None:
        n = state.facts.core.n
        return None if 0 <= agent_id < n else json.dumps(
            {"error": f"there is no agent {agent_id} (agents are 0..{n - 1})"})

    def route_of_agent(agent_id: int) -> str:
        """Route of one agent in the current plan: zones, waypoints, free-flow and simulated
        travel time, and the planner's rationale."""
        if error := agent_or_error(agent_id):
            return error
        f, view = state.facts, state.facts.view
        nodes = f.nodes[agent_id]
        zones = [view.zone_label(n) for n in nodes]
        zones = [z for k, z in enumerate(zones) if k == 0 or z != zones[k - 1]]
        rationale = next((p.rationale for p in f.plan.plans if p.agent_id == agent_id), "")
        return json.dumps({"agent": agent_id, "origin": view.ref(nodes[0]),
                           "destination": view.ref(nodes[-1]), "zones": zones,
                           "waypoints": [view.ref(n) for n in view.waypoints(nodes)],
                           "edges": len(nodes) - 1,
                           "freeflow_s": round(view.route_time(nodes), 1),
                           "travel_time_s": float(f.travel_s[agent_id]),
                           "rationale": rationale[:200]})

    def slowest_agents(k: int = 3) -> str:
        """The k agents with the longest simulated travel time in the current plan."""
        f = state.facts
        k = max(1, min(int(k), 20, f.core.n))
        delay = f.travel_s - f.core.ff_od
        order = np.argsort(-f.travel_s, kind="stable")[:k]
        return json.dumps({"agents": [{"agent": int(i), "travel_time_s": float(f.travel_s[i]),
                                       "freeflow_s": round(float(f.core.ff_od[i]), 1),
                                       "delay_s": round(float(delay[i]), 1)} for i in order]})

    def corridor_load(from_landmark: str, to_landmark: str) -> str:
        """Vehicles of the current plan on the edges from one landmark's zone into another's."""
        view = state.facts.view
        labels = {lab: k for k, lab in enumerate(view.labels)}
        if from_landmark not in labels or to_landmark not in labels:
            return json.dumps({"error": f"use landmark ids L0..L{len(view.labels) - 1}"})
        loads = view.corridor_loads(state.facts.edge_load)
        return json.dumps({"from": from_landmark, "to": to_landmark,
                           "vehicles": loads.get((labels[from_landmark],
                                                  labels[to_landmark]), 0.0)})

    def busiest_corridors(k: int = 3) -> str:
        """The k corridors between zones that most vehicles of the current plan use."""
        view = state.facts.view
        loads = [(v, a, b) for (a, b), v in view.corridor_loads(state.facts.edge_load).items()
                 if a != b]
        top = sorted(loads, key=lambda t: (-t[0], t[1], t[2]))[:max(1, min(int(k), 20))]
        return json.dumps({"corridors": [{"from": view.labels[a], "to": view.labels[b],
                                          "vehicles": v} for v, a, b in top]})

    def agent_bound(agent_id: int) -> str:
        """The critic's stationarity bound of one agent and its terms (external volatility,
        policy divergence of its interaction group), against the critic's absolute epsilon,
        with the bound version and the learners it was judged under."""
        if error := agent_or_error(agent_id):
            return error
        f = state.facts
        t, eps = f.terms, f.threshold
        return json.dumps({"agent": agent_id, "bound": round(float(t.bound[agent_id]), 1),
                           "external_term": round(float(t.external[agent_id]), 1),
                           "divergence_term": round(float(t.divergence[agent_id]), 1),
                           "group_size": len(t.groups[agent_id]), "epsilon": round(eps, 1),
                           "threshold_ratio": f.bound.epsilon,
                           "within_epsilon": bool(t.bound[agent_id] <= eps),
                           "bound_version": f.learners.bound_version(),
                           "learners": f.learners.source})

    def plan_changes() -> str:
        """What the last replan changed: agents with a new route, mean travel time and the
        critic's verdict before and after."""
        old, new = state.previous, state.facts
        if old is None:
            return json.dumps({"replanned": False})
        changed = [i for i, (a, b) in enumerate(zip(old.routes, new.routes, strict=True))
                   if a != b]
        return json.dumps({
            "replanned": True, "variant": state.variant, "n_changed": len(changed),
            "changed_agents": changed[:15],
            "mean_travel_time_before": float(old.travel_s.mean()),
            "mean_travel_time_after": float(new.travel_s.mean()),
            "verdict_before": old.verdict_text["state"],
            "verdict_after": new.verdict_text["state"]})

    def plan_summary() -> str:
        """The current plan: agents, the critic's verdict, round and mean travel time."""
        f = state.facts
        return json.dumps({"agents": f.core.n, **f.verdict_text,
                           "mean_travel_time": float(f.travel_s.mean())})

    return _tools(route_of_agent, slowest_agents, corridor_load, busiest_corridors,
                  agent_bound, plan_changes, plan_summary)
