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
from relied.env.network import CityNetwork
from relied.env.sample import FleetSample
from relied.env.scenario import Scenario, index_of
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
    trial update: bound version 5 or 6; :data:`~relied.experts.learners.UNTRAINED`: version
    4); what the chat tools answer from. ``agents``: the agents the critic judged (the team's
    sample at scale; None: all). ``sample``: the team's fleet sample
    (:class:`~relied.env.sample.FleetSample`, above ``TeamConfig.sim_vehicles``): the plan is
    executed and judged there, as the team did (its learners' routes, on the scaled network),
    and simulated figures exist for the simulated learners only (:meth:`position`).

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
    sample: FleetSample | None = None

    @cached_property
    def nodes(self) -> list[list[int]]:
        return [index_of(self.core.net, r).tolist() for r in self.routes]

    @cached_property
    def simulated(self) -> np.ndarray:
        """The fleet agent id of each simulated learner (all learners without a sample)."""
        return self.sample.learners if self.sample else np.arange(self.core.n)

    def position(self, agent_id: int) -> int | None:
        """``agent_id``'s index among the simulated learners (None: not simulated)."""
        at = int(np.searchsorted(self.simulated, agent_id))
        return at if at < self.simulated.size and self.simulated[at] == agent_id else None

    @cached_property
    def _sim(self) -> tuple[CityNetwork, Scenario, list[list[int]], Learners,
                            list[int] | None]:
        """Where the plan is simulated: network, scenario, routes, the learners as seen
        there and the judged agents' ids there."""
        if self.sample is None:
            return self.core.net, self.core.scenario, self.nodes, self.learners, self.agents
        s = self.sample
        return (s.net, s.scenario, s.routes(self.nodes), self.learners.on_sample(s, self.core.n),
                None if self.agents is None else s.positions(self.agents))

    @cached_property
    def run(self) -> Execution:
        net, scenario, routes, _, _ = self._sim
        return execute(net, scenario, routes=routes)

    @cached_property
    def travel_s(self) -> np.ndarray:
        """Seconds each simulated learner spends on edges in the executed plan."""
        return (self.run.edges_by_step >= 0).sum(0) * self.core.scenario.dt_s

    @property
    def sample_note(self) -> dict:
        """What the simulated figures stand for ({} without a fleet sample)."""
        if self.sample is None:
            return {}
        info = self.sample.info
        return {"fleet_sample": {
            "simulated_vehicles": len(info.learners) + len(info.background),
            "fleet_vehicles": self.core.scenario.n_vehicles,
            "simulated_learners": len(info.learners), "capacity_factor": round(info.factor, 4),
            "note": "simulated figures come from a seeded sample of the fleet on the network "
                    "with capacities times the factor, as the team judged the plan"}}

    @cached_property
    def edge_load(self) -> np.ndarray:
        load = np.zeros(self.core.net.n_edges)
        for r in self.nodes:
            for u, v in zip(r[:-1], r[1:], strict=True):
                load[self.core.net.edge_between(u, v)] += 1
        return load

    @cached_property
    def terms(self) -> BoundTerms:
        """Every simulated agent's bound and its terms, as the critic computes them under
        :attr:`learners`, from the plan's execution."""
        net, scenario, routes, lr, agents = self._sim
        return plan_bounds(net, scenario, routes, self.bound, lr.policy_probs,
                           lr.previous_probs, run=self.run, agents=agents,
                           trial_update=lr.trial_update)

    @cached_property
    def threshold(self) -> float:
        """The absolute epsilon an agent's bound is compared with."""
        if self.epsilon is not None:
            return self.epsilon
        net, scenario, _, lr, agents = self._sim
        return self.bound.epsilon * reference_bound(
            net, scenario, self.bound, lr.policy_probs, lr.previous_probs, agents=agents,
            trial_update=lr.trial_update)


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
        nodes, at = f.nodes[agent_id], f.position(agent_id)
        zones = [view.zone_label(n) for n in nodes]
        zones = [z for k, z in enumerate(zones) if k == 0 or z != zones[k - 1]]
        rationale = next((p.rationale for p in f.plan.plans if p.agent_id == agent_id), "")
        return json.dumps({"agent": agent_id, "origin": view.ref(nodes[0]),
                           "destination": view.ref(nodes[-1]), "zones": zones,
                           "waypoints": [view.ref(n) for n in view.waypoints(nodes)],
                           "edges": len(nodes) - 1,
                           "freeflow_s": round(view.route_time(nodes), 1),
                           "travel_time_s": None if at is None else float(f.travel_s[at]),
                           **({"simulated": at is not None} if f.sample else {}),
                           "rationale": rationale[:200]})

    def slowest_agents(k: int = 3) -> str:
        """The k agents with the longest simulated travel time in the current plan."""
        f = state.facts
        ids = f.simulated
        k = max(1, min(int(k), 20, ids.size))
        delay = f.travel_s - f.core.ff_od[ids]
        order = np.argsort(-f.travel_s, kind="stable")[:k]
        return json.dumps({"agents": [{"agent": int(ids[i]),
                                       "travel_time_s": float(f.travel_s[i]),
                                       "freeflow_s": round(float(f.core.ff_od[ids[i]]), 1),
                                       "delay_s": round(float(delay[i]), 1)} for i in order],
                           **f.sample_note})

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
        at = f.position(agent_id)
        if at is None:
            planned = f.agents[0] if f.agents else int(f.simulated[0])
            return json.dumps({"error": f"agent {agent_id} is not in the fleet sample the team "
                               f"simulated ({f.simulated.size:,} of {f.core.n:,} learners); "
                               f"ask about a planned agent, e.g. agent {planned}"})
        t, eps = f.terms, f.threshold
        ahead = ({} if t.lookahead is None else {"lookahead_drift_s": round(
            float(t.lookahead[at]) * f.core.scenario.time_scale_s, 4)})
        return json.dumps({"agent": agent_id, "bound": round(float(t.bound[at]), 1),
                           "external_term": round(float(t.external[at]), 1),
                           "divergence_term": round(float(t.divergence[at]), 1),
                           "group_size": len(t.groups[at]), "epsilon": round(eps, 1),
                           "threshold_ratio": f.bound.epsilon,
                           "within_epsilon": bool(t.bound[at] <= eps), **ahead,
                           "bound_version": f.learners.bound_version(f.bound),
                           "learners": f.learners.source, **f.sample_note})

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
            "verdict_after": new.verdict_text["state"], **new.sample_note})

    def plan_summary() -> str:
        """The current plan: agents, the critic's verdict, round and mean travel time."""
        f = state.facts
        return json.dumps({"agents": f.core.n, **f.verdict_text,
                           "mean_travel_time": float(f.travel_s.mean()), **f.sample_note})

    return _tools(route_of_agent, slowest_agents, corridor_load, busiest_corridors,
                  agent_bound, plan_changes, plan_summary)
