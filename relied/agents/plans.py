"""Typed plans: the contract between planners, critic and executor (also the model's output
schema), and their validation in code.

A route is a list of node references, LEED's ``[MoveTo, Intersection_k, Agent_i]`` instructions
in order: each is a landmark label (``"L3"``) or an OSM node id (``"123456"``); the first must be
the agent's origin, the last its destination. Adjacent references are one road edge; others are
joined by the executor with the free-flow shortest path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relied.agents.view import CityView, PlanRouteError

MAX_ROUTE_REFS = 2000


class AgentPlan(BaseModel):
    """The route of one vehicle agent."""

    model_config = ConfigDict(extra="forbid")

    agent_id: int = Field(ge=0)
    route: list[str] = Field(min_length=2, max_length=MAX_ROUTE_REFS,
                             description="node refs: origin OSM id, landmarks/nodes, destination")
    rationale: str = Field("", max_length=300)


class JointPlan(BaseModel):
    """One plan per vehicle agent of the planner's scope."""

    model_config = ConfigDict(extra="forbid")

    plans: list[AgentPlan]


class SharedEdge(BaseModel):
    from_node: int
    to_node: int
    agents: int


class AgentBound(BaseModel):
    agent_id: int
    bound: float
    external_term: float
    divergence_term: float
    group_size: int


class CriticVerdict(BaseModel):
    """The critic's decision, with what the planner needs to revise."""

    accepted: bool
    kind: Literal["accepted", "invalid-plan", "stationarity"]
    round: int
    epsilon: float
    bounds: dict[int, float] = Field(default_factory=dict, description="bound per agent")
    violating_agents: list[int] = Field(default_factory=list)
    violations: list[AgentBound] = Field(default_factory=list)
    shared_edges: list[SharedEdge] = Field(default_factory=list)
    plan_mean_return: float | None = None
    baseline_mean_return: float | None = None
    too_slow: bool = Field(False, description="plan slower than the shortest-path baseline")
    mean_travel_time: float | None = None
    reason: str


class PlanRejection(ValueError):
    """A plan that fails validation; ``agents`` are the ones at fault."""

    def __init__(self, reason: str, agents: list[int]):
        super().__init__(reason)
        self.agents = agents


def validate_routes(plans: list[AgentPlan], view: CityView, origins: list[int],
                    destinations: list[int]) -> list[list[int]]:
    """Node-index routes of a complete joint plan, or :class:`PlanRejection` naming the fault.

    ``origins``/``destinations`` are node indices per agent. Checks: every agent exactly once,
    no unknown agent, references resolve, route starts at the origin, ends at the destination,
    follows real edges (after expansion) and visits no node twice.
    """
    n = len(origins)
    seen: dict[int, AgentPlan] = {}
    for p in plans:
        if p.agent_id >= n:
            raise PlanRejection(f"agent {p.agent_id} does not exist (agents are 0..{n - 1})",
                                [p.agent_id])
        if p.agent_id in seen:
            raise PlanRejection(f"agent {p.agent_id} has more than one plan", [p.agent_id])
        seen[p.agent_id] = p
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise PlanRejection(f"agents {missing[:10]} have no plan; give every agent a route",
                            missing)
    routes = []
    for i in range(n):
        refs = seen[i].route
        try:
            first, last = view.resolve(refs[0]), view.resolve(refs[-1])
            if first != origins[i]:
                raise PlanRouteError(f"route starts at {refs[0][:40]}, not at its origin "
                                     f"{view.osm(origins[i])}")
            if last != destinations[i]:
                raise PlanRouteError(f"route ends at {refs[-1][:40]}, not at its destination "
                                     f"{view.osm(destinations[i])}")
            route = view.expand(refs)
        except PlanRouteError as exc:
            raise PlanRejection(f"agent {i}: {exc}", [i]) from None
        if len(set(route)) != len(route):
            loop = next(v for k, v in enumerate(route) if v in route[:k])
            raise PlanRejection(f"agent {i}: route loops through node {view.osm(loop)}; "
                                "visit every node at most once", [i])
        routes.append(route)
    return routes
