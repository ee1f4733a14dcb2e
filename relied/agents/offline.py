"""The offline planner: a deterministic chat-completion client, not an LLM.

It implements AutoGen's ``ChatCompletionClient`` so the whole team (planner -> critic ->
accept) runs for real without a model server. It reads the same prompt an LLM gets (the task's
data block, the planner's scope, other planners' plans, the critic's verdicts) and returns a
schema-valid :class:`JointPlan` from a time-aware incremental assignment: agents are routed one
by one (by departure) on free-flow times plus the BPR delay caused by the agents already
assigned (per time bucket), so later agents spread over alternative streets when congestion
makes that worthwhile. Agents named by a critic rejection also pay a penalty per agent already
on an edge at the same time and on the shared edges it lists (more for every rejection naming
them); a rejection for a return below the shortest-path baseline halves these penalties and
shrinks the congestion estimate (to none after two such rejections). Plan variant ``b > 0``
routes agents in a permuted order with edge costs scaled by up to 25% (seeded by ``b``).
Questions (no JSON schema requested) get a deterministic answer from plan and verdict.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import numpy as np
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ValidationError

from relied.agents.plans import AgentPlan, CriticVerdict, JointPlan
from relied.agents.prompt import read_data_block, read_scope
from relied.agents.view import CityView
from relied.env.network import CityNetwork

OFFLINE_LABEL = "offline planner (deterministic congestion-aware assignment, not an LLM)"
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

    def __init__(self, net: CityNetwork, view: CityView | None = None):
        self.net = net
        self.view = view or CityView(net)
        self.calls = 0
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._adj = [list(range(net.indptr[u], net.indptr[u + 1])) for u in range(net.n_nodes)]

    # ---- ChatCompletionClient ---------------------------------------------------------------
    async def create(self, messages: Sequence[LLMMessage], *,
                     tools: Sequence[Tool | ToolSchema] = (),
                     tool_choice: Any = "auto",
                     json_output: bool | type[BaseModel] | None = None,
                     extra_create_args: Mapping[str, Any] = {},  # noqa: B006 (interface)
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        self.calls += 1
        if isinstance(json_output, type) and issubclass(json_output, JointPlan):
            content = self._plan(messages).model_dump_json()
        else:
            content = self._answer(messages)
        prompt_chars = sum(len(_text(m)) for m in messages)
        usage = RequestUsage(prompt_tokens=prompt_chars // 4, completion_tokens=len(content) // 4)
        self._usage = RequestUsage(prompt_tokens=self._usage.prompt_tokens + usage.prompt_tokens,
                                   completion_tokens=self._usage.completion_tokens
                                   + usage.completion_tokens)
        return CreateResult(finish_reason="stop", content=content, usage=usage, cached=False)

    async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any
                            ) -> AsyncGenerator[str | CreateResult, None]:
        yield await self.create(messages, **kwargs)

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return sum(len(_text(m)) for m in messages) // 4

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
        task, scope, verdicts, others = None, None, [], {}
        for m in messages:
            text = _text(m)
            if isinstance(m, SystemMessage):
                scope = read_scope(text) or scope
                continue
            data = read_data_block(text)
            if data is not None and "agents" in data and task is None:
                task = data
            verdict = _parse(CriticVerdict, text)
            if verdict is not None:
                verdicts.append(verdict)
            plan = _parse(JointPlan, text)
            if plan is not None and isinstance(m, UserMessage):
                for p in plan.plans:
                    others[p.agent_id] = p.route
        if task is None:
            raise ValueError("offline planner: the task message has no DATA_BEGIN/DATA_END block")
        agents = {int(a["id"]): a for a in task["agents"]}
        scope = [i for i in (scope or sorted(agents)) if i in agents]
        return self.assign(agents, scope, verdicts, others, task)

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

    def _occupy(self, occ: np.ndarray, route: list[int], t: float, dt: float) -> None:
        for u, v in zip(route[:-1], route[1:], strict=True):
            e = self.net.edge_between(u, v)
            tt = float(self.net.freeflow_s[e])
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
                ff = float(net.freeflow_s[e])
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
    def _answer(self, messages: Sequence[LLMMessage]) -> str:
        data = None
        for m in messages:
            data = read_data_block(_text(m)) or data
        if not data or "plan" not in data:
            return ("I am the offline planner (not an LLM): I can explain a plan given as data. "
                    "Ask about an agent, e.g. 'why did agent 3 take this route?'")
        question = str(data.get("question", ""))
        plan = _parse(JointPlan, json.dumps(data["plan"]))
        verdict = _parse(CriticVerdict, json.dumps(data.get("verdict")))
        if plan is None:
            return "The plan given as data is not a valid joint plan."
        head = self._verdict_line(verdict)
        match = re.search(r"agent\s*#?\s*(\d+)", question, re.IGNORECASE)
        if match:
            aid = int(match.group(1))
            p = next((x for x in plan.plans if x.agent_id == aid), None)
            if p is None:
                return f"There is no agent {aid} in this plan (agents 0..{len(plan.plans) - 1})."
            route = [self.view.resolve(r) for r in p.route]
            zones = [self.view.zone_label(n) for n in route]
            zones = [z for k, z in enumerate(zones) if k == 0 or z != zones[k - 1]]
            bound = verdict.bounds.get(aid) if verdict else None
            btext = f"; its stationarity bound is {bound:.0f}" if bound is not None else ""
            return (f"Agent {aid} drives {len(route) - 1} edges from node {p.route[0]} to "
                    f"{p.route[-1]} through zones {' -> '.join(zones)} "
                    f"(free-flow {self.view.route_time(route):.0f} s). Reason: {p.rationale}"
                    f"{btext}. {head}")
        return f"The plan routes {len(plan.plans)} agents. {head}"

    @staticmethod
    def _verdict_line(verdict: CriticVerdict | None) -> str:
        if verdict is None:
            return "The critic has not judged it yet."
        state = "accepted" if verdict.accepted else "rejected"
        tt = f", mean travel time {verdict.mean_travel_time:.0f} s" \
            if verdict.mean_travel_time is not None else ""
        return f"The critic {state} it in round {verdict.round}{tt}: {verdict.reason}."
