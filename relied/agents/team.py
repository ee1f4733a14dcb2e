"""The expert team: planner agent(s) and a stationarity critic in an AutoGen round-robin chat.

Planners are ``AssistantAgent`` s with ``output_content_type=JointPlan`` (the schema is the
model's output format) and the planner tools; one planner per ``group_size`` agents. The critic
is a code agent: it merges the planners' latest plans, validates them and calls the
``stationarity_check`` tool (:func:`relied.experts.critic.check_plan`), so its verdict is
deterministic. The chat ends when a verdict accepts or after ``max_rounds`` rounds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.conditions import FunctionalTermination, MaxMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool
from pydantic import BaseModel, Field

from relied.agents.clients import GuardedClient
from relied.agents.plans import (
    AgentBound,
    CriticVerdict,
    JointPlan,
    PlanRejection,
    SharedEdge,
    validate_routes,
)
from relied.agents.prompt import planner_system
from relied.agents.tools import planner_tools
from relied.agents.view import CityView
from relied.env.core import RoutingCore
from relied.experts.bound import BoundConfig, PolicyProbs
from relied.experts.critic import Execution, check_plan, execute


class TeamConfig(BaseModel):
    max_rounds: int = Field(3, ge=1, le=20, description="planner -> critic rounds")
    group_size: int = Field(50, ge=1, description="agents per planner agent")
    bound: BoundConfig = Field(default_factory=BoundConfig)


class TeamOutcome(BaseModel):
    """What a team run decided; cached on disk and stored with each demonstration batch."""

    model_spec: str
    plan: JointPlan
    routes: list[list[int]] = Field(description="node route (OSM ids) per agent")
    verdict: CriticVerdict
    verdicts: list[CriticVerdict]
    rounds: int
    accepted_round: int | None
    model_calls: int
    termination: str
    max_rounds: int
    transcript: list[dict]


def is_accepted(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> bool:
    return any(isinstance(m, StructuredMessage) and isinstance(m.content, CriticVerdict)
               and m.content.accepted for m in messages)


class CriticAgent(BaseChatAgent):
    """Merges the planners' latest plans and judges them with the stationarity tool."""

    def __init__(self, tool: FunctionTool, planners: list[str]):
        super().__init__("critic", "Checks plans with the stationarity bound, computed in code.")
        self.tool, self.planners = tool, planners
        self.latest: dict[str, JointPlan] = {}
        self.round = 0

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StructuredMessage[CriticVerdict],)

    async def on_messages(self, messages: Sequence[BaseChatMessage],
                          cancellation_token: CancellationToken) -> Response:
        for m in messages:
            if isinstance(m, StructuredMessage) and isinstance(m.content, JointPlan):
                self.latest[m.source] = m.content
        self.round += 1
        plans = [p for name in self.planners if name in self.latest
                 for p in self.latest[name].plans]
        text = await self.tool.run_json({"plan_json": JointPlan(plans=plans).model_dump_json(),
                                         "round": self.round}, cancellation_token)
        verdict = CriticVerdict.model_validate_json(text)
        return Response(chat_message=StructuredMessage[CriticVerdict](content=verdict,
                                                                      source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.latest, self.round = {}, 0


class ExpertTeam:
    """Planners + critic for one scenario on one model client."""

    def __init__(self, core: RoutingCore, view: CityView, client: GuardedClient,
                 config: TeamConfig | None = None, policy_probs: PolicyProbs | None = None,
                 edge_load: np.ndarray | None = None):
        self.core, self.view, self.client = core, view, client
        self.config = config or TeamConfig()
        self.policy_probs = policy_probs
        n, size = core.n, self.config.group_size
        self.groups = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
        self.baseline = float(execute(core.net, core.scenario).returns.mean())
        self.runs: dict[int, tuple[list[list[int]], Execution]] = {}
        self.edge_load = edge_load

    def check(self, plan: JointPlan, round_: int) -> CriticVerdict:
        """Validate and judge a merged plan (the critic's tool)."""
        eps = self.config.bound.epsilon
        try:
            routes = validate_routes(plan.plans, self.view, self.core.origin.tolist(),
                                     self.core.dest.tolist())
        except PlanRejection as exc:
            return CriticVerdict(accepted=False, kind="invalid-plan", round=round_, epsilon=eps,
                                 violating_agents=exc.agents,
                                 reason=f"{exc}; fix these agents and resend the whole plan")
        report, run = check_plan(self.core.net, self.core.scenario, routes, self.config.bound,
                                 self.policy_probs, self.groups, self.baseline)
        self.runs[round_] = (routes, run)
        return CriticVerdict(
            accepted=report.accepted, kind="accepted" if report.accepted else "stationarity",
            round=round_, epsilon=eps, bounds=dict(enumerate(report.bounds)),
            violating_agents=[o.agent_id for o in report.offenders],
            violations=[AgentBound(**o.model_dump()) for o in report.offenders[:20]],
            shared_edges=[SharedEdge(from_node=a, to_node=b, agents=c)
                          for a, b, c in report.shared_edges],
            plan_mean_return=report.plan_mean_return,
            baseline_mean_return=report.baseline_mean_return, too_slow=report.too_slow,
            mean_travel_time=report.mean_travel_time, reason=report.reason)

    def _team(self) -> tuple[RoundRobinGroupChat, CriticAgent]:
        def stationarity_check(plan_json: str, round: int) -> str:
            """Validate a joint plan and compute every agent's stationarity bound."""
            return self.check(JointPlan.model_validate_json(plan_json), round).model_dump_json()

        tool = FunctionTool(stationarity_check, description=stationarity_check.__doc__ or "")
        tools = planner_tools(self.view, self.edge_load)
        planners = [AssistantAgent(f"planner_{k}", model_client=self.client, tools=tools,
                                   system_message=planner_system(group),
                                   output_content_type=JointPlan, reflect_on_tool_use=True)
                    for k, group in enumerate(self.groups)]
        critic = CriticAgent(tool, [p.name for p in planners])
        per_round = len(planners) + 1
        stop = FunctionalTermination(is_accepted) | MaxMessageTermination(
            1 + per_round * self.config.max_rounds)
        team = RoundRobinGroupChat([*planners, critic], termination_condition=stop,
                                   custom_message_types=[StructuredMessage[JointPlan],
                                                         StructuredMessage[CriticVerdict]])
        return team, critic

    async def run(self, task: str) -> TeamOutcome:
        """Plan until the critic accepts or the round limit; the last plan is returned."""
        team, critic = self._team()
        calls0 = self.client.calls
        self.client.error = None
        try:
            result = await team.run(task=task)
        except Exception:  # AutoGen re-raises agent failures as RuntimeError text
            if self.client.error is not None:
                raise self.client.error from None
            raise
        verdicts = [m.content for m in result.messages
                    if isinstance(m, StructuredMessage) and isinstance(m.content, CriticVerdict)]
        if not verdicts:
            raise RuntimeError(f"the expert team stopped before the critic spoke "
                               f"({result.stop_reason})")
        final = verdicts[-1]
        plan = JointPlan(plans=sorted((p for name in critic.planners if name in critic.latest
                                       for p in critic.latest[name].plans),
                                      key=lambda p: p.agent_id))
        routes = self.runs[final.round][0] if final.round in self.runs else []
        return TeamOutcome(
            model_spec=self.client.spec, plan=plan,
            routes=[[self.view.osm(n) for n in r] for r in routes], verdict=final,
            verdicts=verdicts, rounds=len(verdicts),
            accepted_round=final.round if final.accepted else None,
            model_calls=self.client.calls - calls0, termination=result.stop_reason or "",
            max_rounds=self.config.max_rounds, transcript=transcript(result.messages))


def transcript(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> list[dict]:
    """Compact JSON-ready record of the conversation (long contents are cut)."""
    rows = []
    for m in messages:
        text = m.to_text() if hasattr(m, "to_text") else str(m)
        if isinstance(m, StructuredMessage) and isinstance(m.content, CriticVerdict):
            v = m.content
            text = json.dumps({"accepted": v.accepted, "kind": v.kind, "round": v.round,
                               "violating_agents": v.violating_agents[:20], "reason": v.reason})
        rows.append({"source": m.source, "type": type(m).__name__, "content": text[:4000]})
    return rows
