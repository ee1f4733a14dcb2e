"""The expert team: planner agent(s) and a stationarity critic in an AutoGen round-robin chat.

Planners are ``AssistantAgent`` s with ``output_content_type=JointPlan`` (the schema is the
model's output format) and, for models with the ``tools`` capability, the planner tools (up to
:data:`MAX_TOOL_ROUNDS` tool rounds before the structured answer); one planner per group of
agents. Groups hold at most ``group_size`` agents and are split further until every planner's
prompt fits the model's budget (:attr:`ModelCard.prompt_budget`), so prompts do not grow with
the fleet. When not even one agent's prompt fits because the other agents' load table is too
long (a large fleet loads many corridors, with many digits), each group's table is capped
(:meth:`PlanBoard.others_load`): the corridors on the group's candidate routes first, then those
touching a zone they pass, each tier by load, as many as fit, and one ``rest`` line sums the
others; prompts that fit without the cap are unchanged. Each planner sees the chat through a
:class:`PlannerContext`: its own task, its own last plan as waypoints, the critic's verdicts
restricted to its agents, and the other agents as corridor loads. The critic is a code agent: it
merges the planners' latest plans, validates them and calls the ``stationarity_check`` tool
(:func:`relied.experts.critic.check_plan`, under the learners passed in:
:class:`~relied.experts.learners.Learners`, their policy and trial update), so its verdict is
deterministic. The chat ends when a
verdict accepts or after ``max_rounds``; when no plan passed, the outcome is the valid plan with
the lowest mean bound, marked ``fallback=True``
(training goes on with it; it is logged and counted).

At scale (more learners than ``TeamConfig.demo_agents``) the team plans for a sample
(:func:`demo_sample`): the fleet (agent ids in order) is cut into ``ceil(demo_agents /
group_size)`` contiguous blocks and every block gives the same share of its agents, drawn
with a generator seeded by the scenario seed and the plan variant. Each block's sample is one
planner group (split further to fit the context), so model calls per round do not grow with
the fleet. The other learners drive their free-flow shortest paths in the executed plan (what
the critic and the demonstration see), and the critic judges the sampled agents (their mean
bound against the same mean of the reference; ``check_plan(agents=...)``). Only the
sampled agents' rows are demonstrations (``DemoMeta.demo_agents``). Since every execution and
resimulation simulates the whole fleet, the critic's ``Vol_ext`` resimulations per check are
capped there (``TeamConfig.scale_executions``; the batch stores the bound settings used). The
setup runs the shortest-path baseline once: its routes are the others' routes and, replaying
exactly, its run is the reference's execution (``critic.shortest_path_run``).

A fleet of more than ``TeamConfig.sim_vehicles`` vehicles (learners and background) is not
simulated whole: the forecast, the set-up and every check of the critic run on one seeded
sample of about that many vehicles that holds every planned learner, on a copy of the
network whose saturation flows, storages and capacities are scaled by the sample's share
(:mod:`relied.env.sample`, the technique of MATSim's capacity factors and SUMO's
``--scale``), so a batch's simulations cost what a fleet of ``sim_vehicles`` costs, whatever
the fleet's size. The critic sees the sample's learners by position; the team maps them
back (verdicts, demonstration rows and returns under the fleet's agent ids; the learners are
asked under those ids, :meth:`Learners.on_sample`; bound version 6's lookahead rolls them
out on the sample's scaled network), and the batch records the sample
(``DemoMeta.fleet_sample``). The free-flow shortest paths of every learner (the planners'
load table, the routes of the learners outside the plan) come from one drive of the learners
alone: that policy reads no traffic. At or below ``sim_vehicles`` nothing of this runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import cached_property, lru_cache

import numpy as np
from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.conditions import FunctionalTermination, MaxMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, UserMessage
from autogen_core.tools import FunctionTool
from pydantic import BaseModel, Field

from relied.agents.clients import CallUsage, GuardedClient, ModelError
from relied.agents.plans import (
    AgentBound,
    CriticVerdict,
    JointPlan,
    PlanRejection,
    SharedEdge,
    validate_routes,
)
from relied.agents.prompt import (
    REST_KEY,
    compact_plan,
    compact_verdict,
    estimate_tokens,
    feedback,
    group_task,
    planner_system,
)
from relied.agents.tools import planner_tools
from relied.agents.view import CityView, PlanRouteError
from relied.env.core import RoutingCore
from relied.env.forecast import TrafficForecast, drive
from relied.env.network import CityNetwork
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import DecisionRecord
from relied.env.sample import DEFAULT_SIM_VEHICLES, FleetSample, sample_fleet
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import (
    Execution,
    check_plan,
    policy_routes,
    reference_bound,
    shortest_path_run,
)
from relied.experts.learners import UNTRAINED, Learners

MAX_TOOL_ROUNDS = 3
# worst-case growth of a planner's prompt after the first round (measured on aguascalientes
# with benchmarks/prompt_size.py; generous): its own last plan as waypoints per agent, its
# offending agents per verdict, and per verdict the tables of worst terms and shared edges
OWN_PLAN_TOKENS_PER_AGENT = 60
OFFENDER_TOKENS_PER_AGENT_ROUND = 4
VERDICT_TOKENS = 550
REPLY_TOKENS_PER_AGENT = 60  # room kept in the context for each agent's line of the reply
SAMPLE_STREAM = 0x5A3B1E  # the demo sample's random stream, apart from the scenario's draws


class TeamConfig(BaseModel):
    max_rounds: int = Field(3, ge=1, le=20, description="planner -> critic rounds")
    group_size: int = Field(50, ge=1, description="largest group of agents per planner (split "
                            "further when a prompt would not fit the model's context)")
    demo_agents: int | None = Field(
        500, ge=1, description="most learners the team plans and demonstrates per scenario: "
        "above it a seeded sample of this many, the same share from every block of the fleet; "
        "the others drive their free-flow shortest paths (None: all learners)")
    scale_executions: int | None = Field(
        2, ge=2, le=256, description="above demo_agents learners: the critic's Vol_ext "
        "resimulations per check (BoundConfig.executions: the shared pool, and at most twice "
        "as many top-ups) are at most this many, since each one simulates the whole fleet "
        "(None: BoundConfig's; at or below demo_agents nothing changes)")
    sim_vehicles: int | None = Field(
        DEFAULT_SIM_VEHICLES, ge=1, description="the most vehicles the critic and the set-up "
        "simulate: a fleet with more (learners and background) is simulated as a sample of "
        "about this many, always holding the planned learners, on the network with every "
        "capacity scaled by the sample's share (relied.env.sample; stored with each batch as "
        "DemoMeta.fleet_sample); at or below it nothing changes (None: never sample)")
    bound: BoundConfig = Field(default_factory=BoundConfig)


def simulation_sample(core: RoutingCore, config: TeamConfig, sampled: Sequence[int],
                      variant: int = 0) -> FleetSample | None:
    """The fleet sample the team's simulations run on (:func:`relied.env.sample.sample_fleet`
    holding ``sampled``, the planned learners; seeded by the scenario seed and ``variant``),
    or None when the fleet has at most ``config.sim_vehicles`` vehicles."""
    if config.sim_vehicles is None:
        return None
    return sample_fleet(core.net, core.scenario, config.sim_vehicles, sampled,
                        seed=core.scenario.seed * 1_000_003 + variant)


def free_flow_routes(net: CityNetwork, scenario: Scenario
                     ) -> tuple[list[list[int]], list[np.ndarray]]:
    """Every learner's free-flow shortest path as ``(node routes, sorted distinct edges)``,
    driven without the background traffic: the shortest-path policy reads no traffic, so the
    routes are those of the whole fleet's run at a fraction of its cost."""
    core = RoutingCore(net, scenario.resolve(net).model_copy(update={
        "background_share": 0.0, "background_origins": [], "background_destinations": [],
        "background_departures_s": []}), record_routes=True)
    drive(core, ShortestPathPolicy())
    per: list[list[np.ndarray]] = [[] for _ in range(core.n)]
    for agents, edges in core.routes:
        for i, e in zip(agents.tolist(), edges.tolist(), strict=True):
            per[i].append(e)
    return core.agent_routes(), [np.unique(np.asarray(e, dtype=np.int64)) for e in per]


def demo_sample(n: int, config: TeamConfig, seed: int, variant: int = 0) -> list[list[int]]:
    """The learners the team plans for, as blocks (each one planner group before splitting):
    ``[[0..n-1]]`` when ``n <= demo_agents``; otherwise ``ceil(demo_agents / group_size)``
    contiguous blocks of the fleet, each giving the same share ``demo_agents / n`` of its
    agents (largest remainders round), sampled by ``(seed, variant)``."""
    limit = config.demo_agents
    if limit is None or n <= limit:
        return [list(range(n))]
    k = -(-limit // config.group_size)
    edges = np.linspace(0, n, k + 1).round().astype(np.int64)
    sizes = np.diff(edges)
    exact = sizes * limit / n
    quota = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quota), kind="stable")[:limit - int(quota.sum())]
    quota[extra] += 1
    rng = np.random.default_rng([seed, variant, SAMPLE_STREAM])
    return [sorted((int(start) + rng.choice(size, q, replace=False)).tolist())
            for start, size, q in zip(edges[:-1], sizes, quota, strict=True)]


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
    groups: int = 1
    usage: list[CallUsage] = Field(default_factory=list, description="one row per model call")
    accepted: bool = Field(False, description="the critic accepted the returned plan")
    fallback: bool = Field(False, description="no plan passed within max_rounds: the returned "
                           "plan is the valid one with the lowest mean bound")
    reference_bound: float | None = Field(None, description="mean bound of the learners' "
                                          "current behaviour (the scale of epsilon)")
    demo_agents: list[int] | None = Field(None, description="the sampled agents planned and "
                                          "demonstrated (None: all; TeamConfig.demo_agents)")


def is_accepted(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> bool:
    return any(isinstance(m, StructuredMessage) and isinstance(m.content, CriticVerdict)
               and m.content.accepted for m in messages)


class PlanBoard:
    """What planners know of each other: routes as edges, loads per corridor. Before a
    planner's plan is seen its agents count on their free-flow shortest paths (or on the
    learners' recent routes when given). ``limits``: the token cap of a group's load table
    (by the group's agents as a tuple; none: the whole table); ``cut``: how many corridors on
    the group's own candidate routes its last capped table left out."""

    def __init__(self, view: CityView, estimate: list[np.ndarray]):
        self.view, self.estimate = view, estimate
        self.limits: dict[tuple[int, ...], int] = {}
        self.cut: dict[tuple[int, ...], int] = {}

        @lru_cache(maxsize=4096)
        def edges_of(refs: tuple[str, ...]) -> tuple[int, ...]:
            try:
                nodes = view.expand(list(refs))
            except PlanRouteError:
                return ()
            net = view.net
            return tuple(net.edge_between(u, v) for u, v in zip(nodes[:-1], nodes[1:],
                                                                  strict=True))

        @lru_cache(maxsize=256)
        def parse(text: str) -> JointPlan | None:
            try:
                return JointPlan.model_validate_json(text)
            except ValueError:
                return None

        self.edges_of, self.parse = edges_of, parse

    def others_load(self, group: Sequence[int], plans: dict[int, list[str]]) -> dict[str, str]:
        """Corridor loads of every agent outside ``group`` (planned routes where known)."""
        mine = set(group)
        load = np.zeros(self.view.net.n_edges)
        for i, edges in enumerate(self.estimate):
            if i in mine:
                continue
            known = self.edges_of(tuple(plans[i])) if i in plans else None
            np.add.at(load, np.asarray(known if known else edges, dtype=np.int64), 1.0)
        rows = self.view.load_rows(load)
        limit = self.limits.get(tuple(group))
        if limit is None or estimate_tokens(json.dumps(rows)) <= limit:
            return rows
        return self._capped(group, load, limit)

    def _capped(self, group: Sequence[int], load: np.ndarray, limit: int) -> dict[str, str]:
        """The load table of the corridors that matter most to ``group`` within ``limit``
        tokens: first those on its agents' candidate routes (:attr:`estimate`), then those
        touching a zone these routes pass, then the rest, each tier by load (ties by corridor);
        the corridors left out are summed in one ``rest`` line."""
        view, net = self.view, self.view.net
        zones = len(view.labels)
        za, zb = view.zone[net.edge_src].astype(np.int64), view.zone[net.edge_dst].astype(np.int64)
        code = za * zones + zb
        per = np.bincount(code, weights=load, minlength=zones * zones)
        routes = np.concatenate([np.asarray(self.estimate[i], dtype=np.int64) for i in group])
        on = set(code[routes].tolist())
        near = set(za[routes].tolist()) | set(zb[routes].tolist())
        ranked = sorted(np.flatnonzero(per > 0).tolist(),
                        key=lambda c: (c not in on, c // zones not in near
                                       and c % zones not in near, -per[c], c))

        def table(k: int) -> dict[str, str]:
            rows = view.load_rows(np.where(np.isin(code, ranked[:k]), load, 0.0))
            if rest := ranked[k:]:
                rows[REST_KEY] = f"corridors:{len(rest)} vehicles:{per[rest].sum():.0f}"
            return rows

        lo, hi = 0, len(ranked)  # the largest k whose table fits (0: the rest line alone)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if estimate_tokens(json.dumps(table(mid))) <= limit:
                lo = mid
            else:
                hi = mid - 1
        self.cut[tuple(group)] = max(0, sum(c in on for c in ranked) - lo)
        return table(lo)


class PlannerContext(ChatCompletionContext):
    """The chat as one planner sees it (see the module docstring); the current turn's tool
    calls and results are kept as they are."""

    def __init__(self, name: str, group: list[int], task: str, board: PlanBoard):
        super().__init__()
        self.name, self.group, self.task, self.board = name, group, task, board

    async def get_messages(self) -> list[LLMMessage]:
        msgs = self._messages
        last_input = max((k for k, m in enumerate(msgs) if isinstance(m, UserMessage)),
                         default=-1)
        out: list[LLMMessage] = [UserMessage(content=self.task, source="user")]
        own, plans, verdicts = None, {}, []
        for m in msgs[:last_input + 1]:
            if isinstance(m, AssistantMessage) and isinstance(m.content, str):
                own = m.content
            elif isinstance(m, UserMessage) and isinstance(m.content, str):
                if m.source == "critic":
                    verdicts.append(CriticVerdict.model_validate_json(m.content))
                elif m.source.startswith("planner_") and m.source != self.name:
                    plan = self.board.parse(m.content)
                    for p in plan.plans if plan else ():
                        plans[p.agent_id] = p.route
        if own is not None and (plan := self.board.parse(own)) is not None:
            out.append(AssistantMessage(content=compact_plan(plan, self.board.view),
                                        source=self.name))
        if verdicts or plans:
            rounds = [compact_verdict(v, self.group, self.board.view) for v in verdicts]
            out.append(UserMessage(content=feedback(len(verdicts) + 1, rounds,
                                                    self.board.others_load(self.group, plans)),
                                   source="critic"))
        return out + list(msgs[last_input + 1:])


class CriticAgent(BaseChatAgent):
    """Merges the planners' latest plans and judges them with the stationarity tool."""

    def __init__(self, tool: FunctionTool, planners: list[str]):
        super().__init__("critic", "Checks plans with the stationarity bound, computed in code.")
        self.tool, self.planners = tool, planners
        self.latest: dict[str, JointPlan] = {}
        self.plans_of_round: dict[int, JointPlan] = {}
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
        self.plans_of_round[self.round] = JointPlan(plans=sorted(plans, key=lambda p: p.agent_id))
        text = await self.tool.run_json({"plan_json": JointPlan(plans=plans).model_dump_json(),
                                         "round": self.round}, cancellation_token)
        verdict = CriticVerdict.model_validate_json(text)
        return Response(chat_message=StructuredMessage[CriticVerdict](content=verdict,
                                                                      source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.latest, self.plans_of_round, self.round = {}, {}, 0


class ExpertTeam:
    """Planners + critic for one scenario on one model client.

    ``behaviour``: the learners' recent routes (node refs per agent) shown to their planners
    and used for the other agents' loads; ``variant`` asks for a different valid plan;
    ``forecast``: the traffic forecast the planner tools answer from, whose delayed corridors
    the planners' tasks list. ``learners`` (:class:`~relied.experts.learners.Learners`):
    what the critic judges every plan and the reference under (their current policy and
    trial update; default untrained, no trial).
    """

    def __init__(self, core: RoutingCore, view: CityView, client: GuardedClient,
                 config: TeamConfig | None = None, learners: Learners | None = None,
                 behaviour: dict[int, list[str]] | None = None, variant: int = 0,
                 forecast: TrafficForecast | None = None, sample: FleetSample | None = None):
        self.core, self.view, self.client = core, view, client
        self.forecast = forecast
        self.config = config or TeamConfig()
        self.learners = learners or UNTRAINED
        self.variant, self.behaviour = variant, behaviour or {}
        self.blocks = demo_sample(core.n, self.config, core.scenario.seed, variant)
        self.sampled = [a for b in self.blocks for a in b]
        self.subset = len(self.sampled) < core.n
        cap, bound = self.config.scale_executions, self.config.bound
        if self.subset and cap is not None and cap < bound.executions:  # at scale
            self.config = self.config.model_copy(
                update={"bound": bound.model_copy(update={"executions": cap})})
        # the fleet sample every simulation runs on (None: the whole fleet); the critic sees
        # the sample's learners by position and the learners as the fleet's
        self.sample = sample or simulation_sample(core, self.config, self.sampled, variant)
        self.sim_net, self.sim_scenario = ((self.sample.net, self.sample.scenario)
                                           if self.sample else (core.net, core.scenario))
        self.sim_learners = (self.learners.on_sample(self.sample, core.n)
                             if self.sample else self.learners)
        # the shortest-path baseline, whose routes the learners outside the sample drive and
        # whose run is the reference's when the reference is the free-flow shortest paths
        base = shortest_path_run(self.sim_net, self.sim_scenario)
        if self.sample:  # every learner's route, for the others' loads and the plan
            self.fixed_routes, estimate = free_flow_routes(core.net, core.scenario)
        else:
            self.fixed_routes = (policy_routes(core.net, core.scenario, "shortest-path")
                                 if self.subset else None)
            estimate = [np.unique(base.edges_by_step[:, i][base.edges_by_step[:, i] >= 0])
                        for i in range(core.n)]
        self.baseline = float(base.returns.mean())
        self.baseline_metrics = base.metrics  # the shortest-path baseline, reused by the batch
        # per checked round: (routes, its execution or None, bound); only the execution of
        # the round :meth:`run` can return is kept (one whole-fleet recording, not one per
        # round), and the demonstration reuses it
        self.runs: dict[int, tuple[list[list[int]], Execution | None, float]] = {}
        self.board = PlanBoard(view, estimate)
        planned = set(self.sampled)
        for i, refs in self.behaviour.items():
            if i in planned and (edges := self.board.edges_of(tuple(refs))):
                estimate[i] = np.asarray(edges, dtype=np.int64)
        self.groups, self.prompts = self._split(self.config.group_size)
        known = [self.board.edges_of(tuple(self.behaviour[i])) if i in self.behaviour else ()
                 for i in range(core.n)]
        current = None
        if all(known):  # the learners' recent routes as node routes
            net = core.net
            current = [[int(net.edge_src[e[0]]), *(int(net.edge_dst[x]) for x in e)]
                       for e in known]
        learners = self.sim_learners
        self.reference = reference_bound(self.sim_net, self.sim_scenario, self.config.bound,
                                         learners.policy_probs, learners.previous_probs,
                                         routes=self._simulated(current),
                                         planner_groups=self._simulated_groups(),
                                         agents=self._simulated_agents(self.judged),
                                         trial_update=learners.trial_update, run=base)

    @property
    def judged(self) -> list[int] | None:
        """The agents the critic judges: the sample at scale, else everyone (None)."""
        return self.sampled if self.subset else None

    # ---- the fleet sample (identities without one) ------------------------------------------
    def _simulated(self, routes: list[list[int]] | None) -> list[list[int]] | None:
        """The simulated learners' routes out of one per learner."""
        return self.sample.routes(routes) if self.sample and routes is not None else routes

    def _simulated_agents(self, agents: list[int] | None) -> list[int] | None:
        """Learner ids as the simulation's agent ids (their sample positions)."""
        return self.sample.positions(agents) if self.sample and agents is not None else agents

    def _simulated_groups(self) -> list[list[int]]:
        return [self._simulated_agents(g) for g in self.groups] if self.sample else self.groups

    def simulated_routes(self, routes: list[list[int]]) -> list[list[int]]:
        """A plan (node routes of every learner, OSM ids) as the critic executes it: node
        indices, of the sample's learners when there is one (``sim_net``, ``sim_scenario``)."""
        return self._simulated([index_of(self.core.net, r).tolist() for r in routes])

    def demonstration_rows(self, run: Execution) -> DecisionRecord:
        """``run``'s decision rows under the fleet's agent ids (with a sample: its learners'
        rows, mapped back, and every learner's return, those not simulated given the mean
        return of the simulated learners outside the planned ones, who drive as they do)."""
        rows = run.decisions
        if not self.sample:
            return rows
        fleet = self.sample.learners
        others = np.setdiff1d(np.arange(fleet.size), self.sample.positions(self.sampled))
        returns = np.full(self.core.n, float(run.returns[others].mean() if others.size
                                             else run.returns.mean()))
        returns[fleet] = run.returns
        return DecisionRecord(rows.step, fleet[rows.agent], rows.obs, rows.mask, rows.action,
                              rows.cum, returns, rows.steps)

    # ---- prompts that fit -------------------------------------------------------------------
    def _prompts(self, groups: list[list[int]], loads: bool = True) -> list[tuple[str, str]]:
        """System and task per group (``loads=False``: the other agents' loads as an empty
        capped table, a ``rest`` line without text)."""
        delay = (None if self.forecast is None
                 else self.view.load_rows(np.round(self.forecast.mean_delay())))
        return [(planner_system(g), group_task(self.core, self.view, g, self.variant,
                                               self.board.others_load(g, {}) if loads
                                               else {REST_KEY: ""},
                                               self.behaviour, delay))
                for g in groups]

    def worst_case_tokens(self, group: list[int], system: str, task: str,
                          loads: int | None = None) -> tuple[int, int]:
        """``(prompt, prompt + reply)`` tokens of ``group``'s planner in its last round: system
        and task, tool and output schemas, its own last plan, every verdict and the other
        agents' loads (as large as in the task; ``loads``: this many tokens instead)."""
        rounds = self.config.max_rounds - 1
        if loads is None:
            loads = estimate_tokens(json.dumps(self.board.others_load(group, {})))
        prompt = (estimate_tokens(system) + estimate_tokens(task) + self._schema_tokens
                  + (len(group) * (OWN_PLAN_TOKENS_PER_AGENT + OFFENDER_TOKENS_PER_AGENT_ROUND
                                   * rounds) + rounds * VERDICT_TOKENS + loads if rounds else 0))
        return prompt, prompt + REPLY_TOKENS_PER_AGENT * len(group)

    @cached_property
    def _schema_tokens(self) -> int:
        """Tokens of the tool schemas (when the model has tools) and of the output schema."""
        parts = [json.dumps(JointPlan.model_json_schema())]
        if self.client.card.tools:
            parts += [json.dumps(t.schema) for t in planner_tools(self.view)]
        return sum(estimate_tokens(p) for p in parts)

    def _load_room(self, group: list[int]) -> int:
        """Tokens left to each copy of ``group``'s load table (task and last feedback) once
        the rest of its worst-case prompt is counted."""
        system, task = self._prompts([group], loads=False)[0]
        fixed = self.worst_case_tokens(group, system, task, loads=0)[0]
        return (self.client.card.prompt_budget - fixed) // (2 if self.config.max_rounds > 1
                                                             else 1)

    def _split(self, size: int) -> tuple[list[list[int]], list[tuple[str, str]]]:
        """Groups of the largest size up to ``size`` whose planner prompts all fit the model
        (binary search: prompts grow with the group); each block of :attr:`blocks` is cut
        into groups of that size. Only when no size fits with the whole load tables, the
        search is repeated with each group's table capped to its room (:meth:`_load_room`),
        where a group fits only if its table keeps every corridor on its candidate routes."""
        card = self.client.card
        n = max(len(b) for b in self.blocks)

        def attempt(k: int, capped: bool) -> tuple[list[list[int]], list[tuple[str, str]],
                                                   dict[tuple[int, ...], int]] | None:
            groups = [b[s:s + k] for b in self.blocks for s in range(0, len(b), k)]
            self.board.limits = ({tuple(g): self._load_room(g) for g in groups} if capped
                                 else {})
            self.board.cut = {}
            prompts = self._prompts(groups)
            worst = max((self.worst_case_tokens(g, *p) for g, p in zip(groups, prompts,
                                                                       strict=True)),
                        key=lambda t: t[1])
            fits = (worst[0] <= card.prompt_budget and worst[1] <= card.num_ctx
                    and not any(self.board.cut.values()))
            return (groups, prompts, self.board.limits) if fits else None

        best = None
        for capped in (False, True):
            lo, hi = 1, min(size, n)
            while lo <= hi:
                mid = (lo + hi) // 2
                if (found := attempt(mid, capped)) is not None:
                    best, lo = found, mid + 1
                else:
                    hi = mid - 1
            if best is not None:
                break
        self.board.limits = best[2] if best is not None else {}
        if best is None:
            one = [self.sampled[0]]
            need = self.worst_case_tokens(one, *self._prompts([one])[0])[0]
            raise ModelError(
                f"a planner prompt for one agent needs about {need:,} tokens, more than "
                f"{card.spec} can take ({card.prompt_budget:,} of a {card.num_ctx:,}-token "
                "context); use a model with a longer context")
        return best[0], best[1]

    # ---- the critic's tool ------------------------------------------------------------------
    def check(self, plan: JointPlan, round_: int) -> CriticVerdict:
        """Validate and judge a merged plan (the critic's tool)."""
        eps = self.config.bound.epsilon * self.reference
        try:
            routes = self._routes(plan)
        except PlanRejection as exc:
            return CriticVerdict(accepted=False, kind="invalid-plan", round=round_, epsilon=eps,
                                 violating_agents=exc.agents,
                                 reason=f"{exc}; fix these agents and resend the whole plan")
        learners = self.sim_learners
        report, run = check_plan(self.sim_net, self.sim_scenario, self._simulated(routes),
                                 self.config.bound, learners.policy_probs,
                                 self._simulated_groups(), self.baseline,
                                 previous_probs=learners.previous_probs,
                                 reference=self.reference,
                                 agents=self._simulated_agents(self.judged),
                                 trial_update=learners.trial_update)
        fleet = (self.sample.learners if self.sample
                 else np.arange(len(report.bounds), dtype=np.int64))
        at = dict(zip(self.sampled, self._simulated_agents(self.sampled), strict=True))
        self._keep(round_, routes, run, report.accepted,
                   report.plan_bound + (1e12 if report.too_slow else 0))
        return CriticVerdict(
            accepted=report.accepted, kind="accepted" if report.accepted else "stationarity",
            round=round_, epsilon=report.epsilon,
            bounds={i: report.bounds[at[i]] for i in self.sampled},
            violating_agents=[int(fleet[o.agent_id]) for o in report.offenders],
            violations=[AgentBound(**o.model_dump() | {"agent_id": int(fleet[o.agent_id])})
                        for o in report.offenders[:20]],
            shared_edges=[SharedEdge(from_node=a, to_node=b, agents=c)
                          for a, b, c in report.shared_edges],
            plan_mean_return=report.plan_mean_return,
            baseline_mean_return=report.baseline_mean_return, too_slow=report.too_slow,
            mean_travel_time=report.mean_travel_time, reason=report.reason)

    def _keep(self, round_: int, routes: list[list[int]], run: Execution, accepted: bool,
              bound: float) -> None:
        """Record a checked round; its execution is kept only if :meth:`run` could return
        it (accepted: the chat ends; else the lowest bound so far, the earliest on ties)."""
        best = min(((b, r) for r, (_, _, b) in self.runs.items()), default=None)
        if accepted or best is None or bound < best[0]:
            self.runs = {r: (x, None, b) for r, (x, _, b) in self.runs.items()}
        else:
            run = None
        self.runs[round_] = (routes, run, bound)

    def execution(self, outcome: TeamOutcome) -> Execution | None:
        """The critic's execution of the plan ``outcome`` returns (None if not kept)."""
        kept = self.runs.get(outcome.verdict.round)
        return kept[1] if kept else None

    def _routes(self, plan: JointPlan) -> list[list[int]]:
        """Node routes of every learner: the validated plan of the sampled agents (all of
        them: every sampled agent exactly once, no other) and, at scale, the free-flow
        shortest paths of the others; :class:`PlanRejection` naming the agents at fault."""
        origin, dest = self.core.origin.tolist(), self.core.dest.tolist()
        if not self.subset:
            return validate_routes(plan.plans, self.view, origin, dest)
        pos = {a: k for k, a in enumerate(self.sampled)}
        ids = [p.agent_id for p in plan.plans]
        stray = sorted({a for a in ids if a not in pos})
        if stray:
            raise PlanRejection(f"agents {stray[:10]} are not among the {len(pos)} sampled "
                                "agents this team plans for; plan only your agents", stray)
        twice = sorted(a for a, c in Counter(ids).items() if c > 1)
        if twice:
            raise PlanRejection(f"agent {twice[0]} has more than one plan", twice)
        given = set(ids)
        missing = [a for a in self.sampled if a not in given]
        if missing:
            raise PlanRejection(f"agents {missing[:10]} have no plan; give every agent a "
                                "route", missing)
        try:  # validated as a plan of agents 0..m-1 (the sample's positions)
            mine = validate_routes([p.model_copy(update={"agent_id": pos[p.agent_id]})
                                    for p in plan.plans], self.view,
                                   [origin[a] for a in self.sampled],
                                   [dest[a] for a in self.sampled])
        except PlanRejection as exc:
            real = [self.sampled[k] for k in exc.agents]
            text = str(exc)
            if exc.agents:
                text = text.replace(f"agent {exc.agents[0]}:", f"agent {real[0]}:", 1)
            raise PlanRejection(text, real) from None
        routes = [list(r) for r in self.fixed_routes]
        for a, r in zip(self.sampled, mine, strict=True):
            routes[a] = r
        return routes

    def _team(self) -> tuple[RoundRobinGroupChat, CriticAgent]:
        def stationarity_check(plan_json: str, round: int) -> str:
            """Validate a joint plan and compute every agent's stationarity bound."""
            return self.check(JointPlan.model_validate_json(plan_json), round).model_dump_json()

        tool = FunctionTool(stationarity_check, description=stationarity_check.__doc__ or "")
        load = np.zeros(self.core.net.n_edges)
        for edges in self.board.estimate:
            np.add.at(load, edges, 1.0)
        tools = (planner_tools(self.view, load, self.forecast) if self.client.card.tools
                 else None)
        planners = []
        for k, (group, (system, task)) in enumerate(zip(self.groups, self.prompts,
                                                        strict=True)):
            name = f"planner_{k}"
            planners.append(AssistantAgent(
                name, model_client=self.client, tools=tools, system_message=system,
                model_context=PlannerContext(name, group, task, self.board),
                output_content_type=JointPlan, reflect_on_tool_use=True,
                max_tool_iterations=MAX_TOOL_ROUNDS))
        critic = CriticAgent(tool, [p.name for p in planners])
        per_round = len(planners) + 1
        stop = FunctionalTermination(is_accepted) | MaxMessageTermination(
            1 + per_round * self.config.max_rounds)
        team = RoundRobinGroupChat([*planners, critic], termination_condition=stop,
                                   custom_message_types=[StructuredMessage[JointPlan],
                                                         StructuredMessage[CriticVerdict]])
        return team, critic

    async def run(self) -> TeamOutcome:
        """Plan until the critic accepts or the round limit; the last plan is returned."""
        team, critic = self._team()
        calls0, usage0 = self.client.calls, len(self.client.usage)
        self.client.error = None
        head = (f"Plan routes for the {len(self.sampled)} agents of '{self.core.net.name}'"
                + (f" (variant {self.variant})" if self.variant else "") + ".")
        try:
            result = await team.run(task=head)
        except Exception:  # AutoGen re-raises agent failures as RuntimeError text
            if self.client.error is not None:
                raise self.client.error from None
            raise
        verdicts = [m.content for m in result.messages
                    if isinstance(m, StructuredMessage) and isinstance(m.content, CriticVerdict)]
        if not verdicts:
            if self.client.error is not None:
                raise self.client.error
            raise RuntimeError(f"the expert team stopped before the critic spoke "
                               f"({result.stop_reason})")
        final = verdicts[-1]
        plan = JointPlan(plans=sorted((p for name in critic.planners if name in critic.latest
                                       for p in critic.latest[name].plans),
                                      key=lambda p: p.agent_id))
        fallback = not final.accepted and bool(self.runs)
        if fallback:  # no plan passed: the valid plan with the lowest mean bound
            best = min(self.runs, key=lambda r: (self.runs[r][2], r))
            final = next(v for v in verdicts if v.round == best)
            plan = critic.plans_of_round.get(best, plan)
        routes = self.runs[final.round][0] if final.round in self.runs else []
        return TeamOutcome(
            model_spec=self.client.spec, plan=plan,
            routes=[[self.view.osm(n) for n in r] for r in routes], verdict=final,
            verdicts=verdicts, rounds=len(verdicts),
            accepted_round=final.round if final.accepted else None,
            model_calls=self.client.calls - calls0, termination=result.stop_reason or "",
            max_rounds=self.config.max_rounds, transcript=transcript(result.messages),
            groups=len(self.groups), usage=self.client.usage[usage0:],
            accepted=final.accepted, fallback=fallback, reference_bound=self.reference,
            demo_agents=self.sampled if self.subset else None)


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
