"""A conversation with the expert team about one scenario (``relied experts chat`` / ``ask``).

The answering agent is an AutoGen ``AssistantAgent`` with the chat tools over the current plan
(:func:`relied.agents.tools.chat_tools`); its model context is the whole conversation, so
follow-ups ("that agent", "what changed after replan?") are answered. Answers stream chunk by
chunk when the model streams (Ollama ``stream: true``). A replan asks the team for the next
plan variant and tells the conversation what happened; :meth:`ChatSession.swap_model` changes
the model and keeps the history. Cancelling an answer (Ctrl-C) drops that turn from the
history. The offline planner answers the same questions from the same tools.

The critic judges every plan of the session (and ``agent_bound`` reports its terms) under the
learners passed to :meth:`ChatSession.start` (:class:`~relied.experts.learners.Learners`, built
by the command: those of a training run, or a new run's seeded untrained learners, with their
trial update: the request's bound version, 5 or 6), as ``relied experts generate`` does. Above
``TeamConfig.sim_vehicles`` vehicles the tools execute and judge the plan on the team's fleet
sample (scaled capacities, :mod:`relied.env.sample`), as the team did, so an answer costs what
a fleet of ``sim_vehicles`` costs; their answers say so (``fleet_sample``) and figures exist
for the simulated learners only.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import UserMessage

from relied.agents.clients import CallUsage, GuardedClient, make_client
from relied.agents.generate import PlanRequest, plan_team
from relied.agents.prompt import EXPLAINER_SYSTEM, data_block
from relied.agents.team import MAX_TOOL_ROUNDS, ExpertTeam, TeamOutcome
from relied.agents.tools import ChatState, PlanFacts, chat_tools
from relied.experts.learners import UNTRAINED, Learners


def _facts(team: ExpertTeam, outcome: TeamOutcome, view, learners: Learners) -> PlanFacts:
    """What the chat tools answer from: the plan, executed and judged where the team judged
    it (its fleet sample above ``sim_vehicles``, with the team's bound settings)."""
    v, bound = outcome.verdict, team.config.bound
    return PlanFacts(core=team.core, view=view, plan=outcome.plan, routes=outcome.routes,
                     bound=bound, epsilon=v.epsilon, learners=learners,
                     agents=outcome.demo_agents, sample=team.sample,
                     verdict_text={"state": "accepted" if v.accepted else
                                   "fallback" if outcome.fallback else "rejected",
                                   "accepted": v.accepted, "round": v.round,
                                   "reason": v.reason[:300],
                                   "bound_version": learners.bound_version(bound)})


class ChatSession:
    """The plan, the conversation and the answering agent of one chat; ``learners``: what
    the critic judges every plan of the session under."""

    def __init__(self, request: PlanRequest, outcome: TeamOutcome, team: ExpertTeam, view,
                 learners: Learners = UNTRAINED):
        self.request, self.outcome, self.core, self.view = request, outcome, team.core, view
        self.learners, self.sample = learners, team.sample
        self.variant = request.variant
        self.state = ChatState(_facts(team, outcome, view, learners))
        self.context = UnboundedChatCompletionContext()
        self.usage: list[CallUsage] = []
        self.client = self._client(request.model)

    @classmethod
    async def start(cls, request: PlanRequest, learners: Learners = UNTRAINED) -> ChatSession:
        """The team plans ``request``, its critic judging under ``learners`` (default:
        untrained, no trial update: bound version 4)."""
        outcome, _, team, view = await plan_team(request, learners)
        return cls(request, outcome, team, view, learners)

    def _client(self, spec: str) -> GuardedClient:
        r = self.request
        return make_client(spec, self.core.net, self.view, host=r.ollama_host,
                           seed=self.core.scenario.seed, timeout_s=r.timeout_s)

    def _agent(self) -> AssistantAgent:
        tools = chat_tools(self.state) if self.client.card.tools else None
        system = EXPLAINER_SYSTEM
        if tools is None:  # no tools: the plan goes into the prompt as data
            system += "\n" + data_block({"plan": [[p.agent_id, p.route[:8]]
                                                  for p in self.outcome.plan.plans[:60]],
                                         "verdict": self.state.facts.verdict_text})
        return AssistantAgent("experts", model_client=self.client, tools=tools,
                              system_message=system, model_context=self.context,
                              model_client_stream=True, reflect_on_tool_use=True,
                              max_tool_iterations=MAX_TOOL_ROUNDS)

    @property
    def spec(self) -> str:
        return self.client.spec

    async def ask(self, question: str) -> AsyncIterator[str]:
        """Stream the answer to ``question`` (chunks; the last item is the whole answer when
        the model did not stream). A turn that fails or is cancelled leaves no trace."""
        saved = copy.copy(await self.context.get_messages())
        calls0 = len(self.client.usage)
        agent, streamed = self._agent(), False
        try:
            async for event in agent.on_messages_stream(
                    [TextMessage(content=question[:2000], source="user")], _token()):
                if isinstance(event, ModelClientStreamingChunkEvent):
                    streamed = True
                    yield event.content
                elif isinstance(event, Response) and not streamed:
                    yield event.chat_message.to_text()
        except BaseException:
            await self.context.clear()
            for m in saved:
                await self.context.add_message(m)
            raise
        finally:
            self.usage += self.client.usage[calls0:]

    async def answer(self, question: str) -> str:
        return "".join([chunk async for chunk in self.ask(question)])

    async def replan(self) -> TeamOutcome:
        """The team's next plan variant; the conversation is told what changed."""
        self.variant += 1
        request = self.request.model_copy(update={"variant": self.variant})
        outcome, _, team, view = await plan_team(request, self.learners)
        self.outcome, self.core, self.view, self.sample = outcome, team.core, view, team.sample
        self.state.replace(_facts(team, outcome, view, self.learners), self.variant)
        v = outcome.verdict
        await self.context.add_message(UserMessage(
            content=f"(The team replanned: variant {self.variant}, "
            f"{'accepted' if v.accepted else 'rejected'} after {outcome.rounds} round(s). "
            "Use plan_changes to see what changed.)", source="system"))
        return outcome

    def swap_model(self, spec: str) -> None:
        """Answer (and replan) with another model from now on; the conversation is kept."""
        self.client = self._client(spec)
        self.request = self.request.model_copy(update={"model": spec})


def _token():
    from autogen_core import CancellationToken

    return CancellationToken()
