"""The offline planner: a deterministic chat-completion client, not an LLM.

It implements AutoGen's ``ChatCompletionClient`` so the whole team (planner -> critic ->
accept) runs for real without a model server. It reads the same prompt an LLM gets (the task's
data block, the planner's scope, the critic's verdicts in the feedback block) and returns a
schema-valid :class:`JointPlan` from a time-aware incremental assignment: agents are routed one
by one (by departure) on the traffic forecast's time-dependent edge times (free-flow times
without one; :class:`relied.env.forecast.TrafficForecast`, the same forecast an LLM planner's
tools answer from) scaled by the BPR delay caused by the agents already assigned (per time
bucket), so later agents spread over alternative streets when congestion makes that
worthwhile. An LLM planner sees the other groups only as corridor loads; the
offline planner plans every group itself and remembers the routes it gave the other groups of
the same task (keyed by the task's ``run`` id) to fill its occupancy table. Agents named by a
critic rejection also pay a penalty per agent already on an edge at the same time and on the
shared edges it lists (more for every rejection naming them); a rejection for a return below
the shortest-path baseline halves these penalties and shrinks the congestion estimate (to none
after two such rejections). Plan variant ``b > 0`` routes agents in a permuted order with edge
costs scaled by up to 25% (seeded by ``b``).

Questions (no JSON schema requested) are answered from the same tools an LLM gets: with tools
offered, the client picks the tool calls the question needs (an agent's route or bound terms,
the slowest agents, a corridor's load, what changed after a replan; "that agent" is the one
named last in the conversation), and once the results are back it words them as the answer.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import numpy as np
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ValidationError

from relied.agents.plans import AgentPlan, CriticVerdict, JointPlan, SharedEdge
from relied.agents.prompt import (
    AGENTS_KEY,
    estimate_tokens,
    read_agents,
    read_data_block,
    read_scope,
)
from relied.agents.view import CityView
from relied.env.forecast import TrafficForecast
from relied.env.network import CityNetwork

OFFLINE_LABEL = "offline planner (deterministic congestion-aware assignment, not an LLM)"
OFFLINE_VERSION = "3"  # bump when the planner's answers change (part of the cache key)
OFFLINE_INFO = ModelInfo(vision=False, function_calling=True, json_output=True,
                         family=ModelFamily.UNKNOWN, structured_output=True)


def _text(message: LLMMessage) -> str:
    content = getattr(message, "content", "")
    return content if isinstance(content, str) else ""


def _parse(model: type[BaseModel], text: str) -> Any:
    try:
        return model.model_validate_json(text)
    except (ValidationError, ValueError):
        return None


class OfflinePlannerClient(ChatCompletionClient):
    """Deterministic planning client over ``net`` (see module docstring)."""

    co_occupancy_penalty_s = 15.0
    variant_noise = 0.25  # plan variant b > 0: edge costs scaled by up to 25% (seeded by b)
    shared_edge_penalty_s = 5.0

    def __init__(self, net: CityNetwork, view: CityView | None = None,
                 forecast: TrafficForecast | None = None):
        self.net = net
        self.view = view or CityView(net)
        self.forecast = forecast
        self.calls = 0
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._adj = [list(range(net.indptr[u], net.indptr[u + 1])) for u in range(net.n_nodes)]
        # run id -> {agent: (route, departure)} of the plans it gave
        self._given: dict[str, dict[int, tuple[list[str], float]]] = {}

    # ---- ChatCompletionClient ---------------------------------------------------------------
    async def create(self, messages: Sequence[LLMMessage], *,
                     tools: Sequence[Tool | ToolSchema] = (),
                     tool_choice: Any = "auto",
                     json_output: bool | type[BaseModel] | None = None,
                     extra_create_args: Mapping[str, Any] = {},  # noqa: B006 (interface)
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        self.calls += 1
        content: str | list[FunctionCall]
        if isinstance(json_output, type) and issubclass(json_output, JointPlan):
            content = self._plan(messages).model_dump_json()
        else:
            offered = {_tool_name(t) for t in tools} if tool_choice != "none" else set()
            content = self._answer(messages, offered)
        text = content if isinstance(content, str) else json.dumps(
            [[c.name, c.arguments] for c in content])
        # token counts are the same estimate the guard uses: no model, no tokenizer
        usage = RequestUsage(prompt_tokens=self.count_tokens(messages),
                             completion_tokens=estimate_tokens(text))
        self._usage = RequestUsage(prompt_tokens=self._usage.prompt_tokens + usage.prompt_tokens,
                                   completion_tokens=self._usage.completion_tokens
                                   + usage.completion_tokens)
        return CreateResult(finish_reason="stop" if isinstance(content, str) else
                            "function_calls", content=content, usage=usage, cached=False)

    async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any
                            ) -> AsyncGenerator[str | CreateResult, None]:
        result = await self.create(messages, **kwargs)
        if isinstance(result.content, str):
            for word in re.findall(r"\S+\s*", result.content):
                yield word
        yield result

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return sum(estimate_tokens(_text(m)) for m in messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *,
                         tools: Sequence[Any] = ()) -> int:
        return 1_000_000 - self.count_tokens(messages)

    @property
    def capabilities(self) -> Any:
        return OFFLINE_INFO

    @property
    def model_info(self) -> ModelInfo:
        return OFFLINE_INFO

    # ---- planning ---------------------------------------------------------------------------
    def _plan(self, messages: Sequence[LLMMessage]) -> JointPlan:
        task, scope, verdicts = None, None, []
        for m in messages:
            text = _text(m)
            if isinstance(m, SystemMessage):
                scope = read_scope(text) or scope
                continue
            data = read_data_block(text) if isinstance(m, UserMessage) else None
            if data is None:
                continue
            if AGENTS_KEY in data and task is None:
                task = data
            verdicts += [self._verdict(v) for v in data.get("verdicts", [])
                         if isinstance(v, dict)]
        if task is None:
            raise ValueError("offline planner: the task message has no DATA_BEGIN/DATA_END block")
        agents = read_agents(task)
        scope = [i for i in (scope or sorted(agents)) if i in agents]
        given = self._given.setdefault(str(task.get("run", "")), {})
        others = {a: r for a, (r, _) in given.items() if a not in scope}
        everyone = {**{a: {"departure_s": d} for a, (_, d) in given.items()}, **agents}
        plan = self.assign(everyone, scope, verdicts, others, task)
        given.update({p.agent_id: (p.route, agents[p.agent_id]["departure_s"])
                      for p in plan.plans})
        return plan

    def _verdict(self, v: dict) -> CriticVerdict:
        """A compact verdict of the feedback block as a :class:`CriticVerdict`."""
        edges = []
        for f, t, k in v.get("shared_edges", {}).get("rows", []):
            try:
                edges.append(SharedEdge(from_node=self.view.osm(self.view.resolve(f)),
                                        to_node=self.view.osm(self.view.resolve(t)), agents=k))
            except ValueError:
                continue
        return CriticVerdict(accepted=bool(v.get("accepted")), kind=v.get("kind", "stationarity"),
                             round=int(v.get("round", 0)), epsilon=0.0,
                             violating_agents=[int(a) for a in v.get("your_offending_agents", [])],
                             shared_edges=edges, too_slow=bool(v.get("too_slow")),
                             reason=str(v.get("reason", "")))

    def assign(self, agents: dict[int, dict], scope: list[int], verdicts: list[CriticVerdict],
               others: dict[int, list[str]], task: dict) -> JointPlan:
        """Route ``scope`` one agent at a time on a time-bucketed occupancy table."""
        net, dt = self.net, float(task.get("dt_s", 5.0))
        alpha, beta = (float(x) for x in task.get("bpr", [0.15, 4.0]))
        buckets = int(np.ceil(float(task.get("horizon_s", 1800.0)) / dt)) + 1
        occ = np.zeros((net.n_edges, buckets), dtype=np.int32)
        for aid, refs in sorted(others.items()):
            if aid in agents and aid not in scope:
                try:
                    route = self.view.expand(refs)
                except ValueError:
                    continue
                self._occupy(occ, route, float(agents[aid]["departure_s"]), dt)
        named: dict[int, int] = {}
        edge_pen = np.zeros(net.n_edges)
        slow = 0
        for v in verdicts:
            if v.accepted:
                continue
            for a in v.violating_agents:
                named[a] = named.get(a, 0) + 1
            for s in v.shared_edges:
                try:
                    u, w = self.view.resolve(s.from_node), self.view.resolve(s.to_node)
                    e = net.edge_between(u, w)
                except ValueError:
                    continue
                if e >= 0:
                    edge_pen[e] += self.shared_edge_penalty_s * s.agents
            slow += v.too_slow
        order = sorted(scope, key=lambda i: (float(agents[i]["departure_s"]), i))
        variant = int(task.get("variant", 0))
        taste = np.ones(net.n_edges)
        if variant:
            rng = np.random.default_rng(variant)
            order = [order[k] for k in rng.permutation(len(order))]
            taste += self.variant_noise * 0.5 ** slow * rng.random(net.n_edges)
        # slower than the baseline: trust the congestion estimate less (none after two such)
        congestion = alpha * (0.25 ** slow if slow < 2 else 0.0)
        plans = []
        for i in order:
            a = agents[i]
            o, d = self.view.resolve(a["origin"]), self.view.resolve(a["destination"])
            times = named.get(i, 0)
            lam = self.co_occupancy_penalty_s * times * 0.5 ** slow
            pen = edge_pen * 0.5 ** slow if times else None
            route, est, crowded = self._route(o, d, float(a["departure_s"]), occ, dt, lam, pen,
                                              taste, congestion, beta)
            self._occupy(occ, route, float(a["departure_s"]), dt)
            why = f"time-aware assignment, est. {est:.0f} s, {crowded} shared edges"
            if times:
                why += f"; moved off edges named by the critic ({times}x)"
            plans.append(AgentPlan(agent_id=i, route=[str(self.view.osm(n)) for n in route],
                                   rationale=why))
        return JointPlan(plans=sorted(plans, key=lambda p: p.agent_id))

    def _edge_time(self, e: int, t: float) -> float:
        """Expected seconds on edge ``e`` entered at ``t`` before the planned agents' own
        congestion: the forecast's, or free flow."""
        if self.forecast is None:
            return float(self.net.freeflow_s[e])
        return float(self.forecast.at(e, t))

    def _occupy(self, occ: np.ndarray, route: list[int], t: float, dt: float) -> None:
        for u, v in zip(route[:-1], route[1:], strict=True):
            e = self.net.edge_between(u, v)
            tt = self._edge_time(e, t)
            b0, b1 = int(t / dt), int((t + tt) / dt)
            occ[e, min(b0, occ.shape[1] - 1):min(b1, occ.shape[1] - 1) + 1] += 1
            t += tt

    def _route(self, o: int, d: int, t0: float, occ: np.ndarray, dt: float, lam: float,
               pen: np.ndarray | None, taste: np.ndarray, alpha: float, beta: float
               ) -> tuple[list[int], float, int]:
        """Time-dependent label-setting search on travel time + co-occupancy penalties."""
        net, last = self.net, occ.shape[1] - 1
        best = {o: 0.0}
        clock = {o: t0}
        prev: dict[int, tuple[int, int]] = {}
        heap = [(0.0, o)]
        done: set[int] = set()
        while heap:
            g, u = heapq.heappop(heap)
            if u in done:
                continue
            done.add(u)
            if u == d:
                break
            t = clock[u]
            for e in self._adj[u]:
                v = int(net.edge_dst[e])
                if v in done:
                    continue
                b0 = min(int(t / dt), last)
                ff = self._edge_time(e, t)
                b1 = min(int((t + ff) / dt), last)
                count = int(occ[e, b0:b1 + 1].max())
                tt = ff * (1.0 + alpha * ((count + 1) / net.capacity[e]) ** beta)
                cost = g + tt * taste[e] + lam * count + (pen[e] if pen is not None else 0.0)
                if cost < best.get(v, np.inf):
                    best[v], clock[v], prev[v] = cost, t + tt, (u, e)
                    heapq.heappush(heap, (cost, v))
        route, crowded = [d], 0
        while route[-1] != o:
            u, e = prev[route[-1]]
            b = min(int(clock[u] / dt), last)
            crowded += int(occ[e, b] > 0)
            route.append(u)
        return route[::-1], clock[d] - t0, crowded

    # ---- questions --------------------------------------------------------------------------
    def _answer(self, messages: Sequence[LLMMessage], offered: set[str]
                ) -> str | list[FunctionCall]:
        """Tool calls for the last question (when tools are offered and none ran yet for it),
        else the answer worded from the tool results that came back."""
        questions = [_text(m) for m in messages if isinstance(m, UserMessage)]
        question = questions[-1] if questions else ""
        results = []
        for m in reversed(messages):
            if isinstance(m, FunctionExecutionResultMessage):
                results = [*m.content, *results]
            elif isinstance(m, AssistantMessage) and isinstance(m.content, list):
                continue
            else:
                break
        if results:
            return " ".join(_word(r.name, r.content) for r in results)
        calls = _calls_for(question, questions[:-1], offered)
        if calls:
            return [FunctionCall(id=f"offline-{k}", name=name, arguments=json.dumps(args))
                    for k, (name, args) in enumerate(calls)]
        return ("I am the offline planner (not an LLM): ask about an agent ('why did agent 3 "
                "take this route?', 'what is its bound?'), 'the slowest agents', 'load from L1 "
                "to L4', 'the busiest corridors' or 'what changed after replan?'.")


_AGENT = re.compile(r"\bagent\s*#?\s*(\d+)", re.IGNORECASE)
_THAT = re.compile(r"\b(that|this|same|the)\s+(agent|vehicle|one)\b|\b(it|its|him|her)\b",
                   re.IGNORECASE)
_LANDMARK = re.compile(r"\bL(\d+)\b")


def _tool_name(tool: Any) -> str:
    return tool.name if hasattr(tool, "name") else str(tool.get("name", ""))


def _last_agent(earlier: list[str]) -> int | None:
    for text in reversed(earlier):
        found = _AGENT.findall(text)
        if found:
            return int(found[-1])
    return None


def _calls_for(question: str, earlier: list[str], offered: set[str]
               ) -> list[tuple[str, dict]]:
    """The tool calls a question needs (only tools that are offered)."""
    q = question.lower()
    found = _AGENT.findall(question)
    agent = int(found[-1]) if found else (_last_agent(earlier) if _THAT.search(question)
                                          else None)
    calls: list[tuple[str, dict]] = []
    marks = _LANDMARK.findall(question)
    if any(w in q for w in ("changed", "change", "differ", "after replan", "new plan")):
        calls.append(("plan_changes", {}))
    if "slow" in q:
        k = re.search(r"\b(\d+)\s+slowest", q)
        calls.append(("slowest_agents", {"k": int(k.group(1)) if k else 3}))
    if len(marks) >= 2:
        calls.append(("corridor_load", {"from_landmark": f"L{marks[0]}",
                                        "to_landmark": f"L{marks[1]}"}))
    elif any(w in q for w in ("busiest", "corridor", "congest")):
        calls.append(("busiest_corridors", {"k": 3}))
    if agent is not None:
        if any(w in q for w in ("bound", "stationar", "critic", "reject", "term")):
            calls.append(("agent_bound", {"agent_id": agent}))
        if not calls or any(w in q for w in ("route", "why", "take", "drive", "go", "path")):
            calls.append(("route_of_agent", {"agent_id": agent}))
    if not calls and any(w in q for w in ("verdict", "accept", "plan", "summary", "how")):
        calls.append(("plan_summary", {}))
    return [(name, args) for name, args in calls if name in offered]


def _word(name: str, content: str) -> str:
    """One tool result as a sentence."""
    try:
        r = json.loads(content)
    except json.JSONDecodeError:
        return content[:300]
    if not isinstance(r, dict):
        return content[:300]
    if "error" in r:
        return f"{r['error']}."
    return _sentence(name, r, content) + _sampled(r)


def _sampled(r: dict) -> str:
    """The fleet sample a tool's simulated figures come from, as a sentence ('' if none)."""
    s = r.get("fleet_sample")
    if not isinstance(s, dict):
        return ""
    return (f" (Simulated on a seeded fleet sample of {s['simulated_vehicles']:,} of "
            f"{s['fleet_vehicles']:,} vehicles, {s['simulated_learners']:,} learners, "
            f"capacities x{s['capacity_factor']:g}.)")


def _sentence(name: str, r: dict, content: str) -> str:
    """One tool result (parsed) as a sentence."""
    if name == "route_of_agent":
        simulated = (f"{r['travel_time_s']:.0f} s in the simulated plan"
                     if r["travel_time_s"] is not None else "not in the simulated fleet sample")
        return (f"Agent {r['agent']} drives {r['edges']} edges from {r['origin']} to "
                f"{r['destination']} through zones {' -> '.join(r['zones'])} (free-flow "
                f"{r['freeflow_s']:.0f} s, {simulated}). Reason: {r['rationale']}.")
    if name == "agent_bound":
        state = "within" if r["within_epsilon"] else "above"
        return (f"Agent {r['agent']}'s stationarity bound is {r['bound']:.1f} ({state} "
                f"epsilon {r['epsilon']:.1f}): external term {r['external_term']:.0f}, "
                f"divergence term {r['divergence_term']:.0f}, {r['group_size'] - 1} other "
                f"agents in its interaction group.")
    if name == "slowest_agents":
        rows = ", ".join(f"agent {a['agent']} ({a['travel_time_s']:.0f} s, "
                         f"+{a['delay_s']:.0f} s over free flow)" for a in r["agents"])
        return f"The slowest agents: {rows}."
    if name == "corridor_load":
        return (f"{r['vehicles']:.0f} vehicles of the plan use corridor {r['from']} -> "
                f"{r['to']}.")
    if name == "busiest_corridors":
        rows = ", ".join(f"{c['from']} -> {c['to']} ({c['vehicles']:.0f})"
                         for c in r["corridors"])
        return f"The busiest corridors: {rows}."
    if name == "plan_changes":
        if not r.get("replanned"):
            return "There has been no replan yet in this conversation."
        moved = r["changed_agents"]
        return (f"After the replan (variant {r['variant']}) {r['n_changed']} agents changed "
                f"route{' (' + ', '.join(map(str, moved)) + ')' if moved else ''}; mean travel "
                f"time {r['mean_travel_time_before']:.0f} s -> {r['mean_travel_time_after']:.0f}"
                f" s; the critic {r['verdict_before']} before and {r['verdict_after']} now.")
    if name == "plan_summary":
        state = "accepted" if r["accepted"] else "rejected"
        return (f"The plan routes {r['agents']} agents; the critic {state} it in round "
                f"{r['round']} (mean travel time {r['mean_travel_time']:.0f} s): "
                f"{r['reason']}.")
    return content[:300]
