"""Demonstrations from the expert team, with an on-disk cache and concurrent generation.

Batch ``b`` of a scenario uses the same resolved scenario (same OD pairs and departures, the
ones training runs on); for ``b > 0`` the task asks for plan variant ``b`` (the offline planner
routes agents in a seeded permuted order; an LLM is asked for a different valid plan), so the
batches differ while describing the same training problem. Above ``TeamConfig.demo_agents``
learners a batch demonstrates a sample of them (``relied.agents.team.demo_sample``; another
sample per variant), recorded in ``DemoMeta.demo_agents``. Above ``TeamConfig.sim_vehicles``
vehicles the forecast, the team's set-up and the critic simulate a fleet sample with scaled
capacities (:mod:`relied.env.sample`; :mod:`relied.agents.team`); the batch then stores the
sample's execution under the fleet's agent ids and the sample in ``DemoMeta.fleet_sample``.

Cache: an accepted team outcome is stored under ``$RELIED_EXPERT_CACHE/<key>.json`` (default
``$RELIED_CACHE_DIR/experts``) with ``key`` the hash of (resolved scenario, model spec and
digest, every planner's prompts, team and bound settings). Prompts are byte-identical across
processes, so an identical request is answered from disk with zero model calls. Rejected plans
and failures are not cached. The critic judges under the learners
(:class:`~relied.experts.learners.Learners`: their current policy and trial update, bound
version 5); the verdict depends on them, so learners given with a ``digest`` (a stable id of
their state) add it to the key, and learners without one are never cached. A cache directory
that cannot be written is skipped with one warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from relied.agents.clients import (
    CallUsage,
    ModelCard,
    ModelError,
    chat_card,
    describe,
    make_client,
    usage_totals,
)
from relied.agents.fallible import FallibleOfflineClient, herding_agents
from relied.agents.prompt import PLANNER_SYSTEM
from relied.agents.team import (
    ExpertTeam,
    TeamConfig,
    TeamOutcome,
    demo_sample,
    simulation_sample,
)
from relied.agents.view import CityView
from relied.env.cities import cache_dir, load_city
from relied.env.core import RoutingCore
from relied.env.forecast import TrafficForecast
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario, index_of
from relied.experts.critic import execute
from relied.experts.demos import DemoMeta, save_batch
from relied.experts.learners import UNTRAINED, Learners

CACHE_VERSION = 4  # 4: planners route on the traffic forecast


class PlanRequest(BaseModel):
    """One request to the expert team: which scenario, which model, which settings."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario
    model: str = "offline"
    variant: int = Field(0, ge=0)
    config: TeamConfig = Field(default_factory=TeamConfig)
    behaviour: dict[int, list[int]] | None = Field(
        None, description="recent routes (OSM ids) per agent, shown to their planners")
    ollama_host: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    use_cache: bool = True
    first_plan_only: bool = Field(
        False, description="the chat ends after the critic judged the first plan (no filter:"
        " it is used as is); groups, prompts and reference are those of config.max_rounds")


class BatchResult(BaseModel):
    """Summary of one generated batch (``path`` is None when filtered out)."""

    path: str | None
    scenario_seed: int
    variant: int
    accepted: bool
    fallback: bool = Field(False, description="no plan passed: the best-bound plan was saved")
    accepted_round: int | None
    rounds: int
    model_calls: int
    cached: bool
    mean_travel_time: float | None
    shortest_path_mean_travel_time: float
    rejected: list[dict] = Field(default_factory=list, description="[{agent, reason}]")
    usage: list[CallUsage] = Field(default_factory=list)
    bound_version: int = Field(description="the bound version the critic judged with (6: "
                               "the lookahead, the default; 5: "
                               "with the learners' trial update)")
    learners: str = Field(description="the learners the critic judged under")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def expert_cache_dir() -> Path:
    """``$RELIED_EXPERT_CACHE``, else ``$RELIED_CACHE_DIR/experts``."""
    env = os.environ.get("RELIED_EXPERT_CACHE")
    return Path(env) if env else cache_dir() / "experts"


def cache_key(team: ExpertTeam, card: ModelCard, variant: int) -> str:
    """The request's hash; the learners' digest enters it when they have one (untrained
    learners keep the key they had before learners existed)."""
    request = {"v": CACHE_VERSION, "scenario": team.core.scenario.model_dump(mode="json"),
               "model": card.spec, "digest": card.digest, "system": PLANNER_SYSTEM,
               "prompts": team.prompts, "variant": variant, "tools": card.tools,
               "forecast": team.forecast.digest() if team.forecast else None,
               # (the simulation setting only where it samples: other keys stay as they were)
               "config": team.config.model_dump(
                   mode="json", exclude=None if team.sample else {"sim_vehicles"})}
    if team.sample is not None:  # what was simulated (its stuck time too)
        request["fleet_sample"] = team.sample.info.model_dump(mode="json")
    if team.learners.digest is not None:
        request["learners"] = team.learners.digest
    blob = json.dumps(request, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CacheEntry(BaseModel):
    """A cached answer with what it answers: checked on load, never trusted blindly."""

    version: int
    key: str
    outcome: TeamOutcome


def _load_cached(key: str, core: RoutingCore) -> TeamOutcome | None:
    """The cached outcome of ``key``, if the entry is of this cache version, answers this very
    key and routes only over nodes of ``core``'s network with the right origins and
    destinations; otherwise ``None`` (one warning: the team is asked again)."""
    path = expert_cache_dir() / f"{key}.json"
    try:
        entry = CacheEntry.model_validate_json(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # no entry (or no cache folder)
        return None
    except (OSError, ValueError) as exc:
        _warn_once(f"expert cache entry {path} is unreadable ({type(exc).__name__}); "
                   "asking the team again")
        return None
    routes = entry.outcome.routes
    ids = set(core.net.osm_ids.tolist())
    od = [(int(core.net.osm_ids[o]), int(core.net.osm_ids[d]))
          for o, d in zip(core.origin, core.dest, strict=True)]
    problem = ("another cache version" if entry.version != CACHE_VERSION else
               "another request" if entry.key != key else
               "routes of another scenario" if len(routes) != core.n or any(
                   not r or (r[0], r[-1]) != od[i] for i, r in enumerate(routes)) else
               "nodes outside this network" if any(n not in ids for r in routes for n in r)
               else None)
    if problem:
        _warn_once(f"expert cache entry {path} holds {problem}; asking the team again")
        return None
    return entry.outcome


def _store(key: str, outcome: TeamOutcome) -> None:
    """Write atomically (unique temporary name); a read-only cache is skipped with a warning."""
    folder = expert_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            f.write(CacheEntry(version=CACHE_VERSION, key=key,
                               outcome=outcome).model_dump_json())
        Path(f.name).replace(folder / f"{key}.json")
    except OSError as exc:
        _warn_once(f"cannot write the expert cache {folder} ({exc.strerror or exc}); running "
                   "without caching (set RELIED_EXPERT_CACHE to a writable folder)")


def _behaviour_refs(view: CityView, behaviour: dict[int, list[int]] | None
                    ) -> dict[int, list[str]]:
    """Recent routes as waypoints with compact ids; routes not on the network are skipped."""
    refs = {}
    for k, route in (behaviour or {}).items():
        try:
            nodes = index_of(view.net, route).tolist()
            refs[int(k)] = [view.ref(n) for n in view.waypoints(nodes)]
        except (ValueError, IndexError):
            continue
    return refs


_FORECASTS: dict[str, TrafficForecast] = {}


def _forecast(net: CityNetwork, scenario: Scenario) -> TrafficForecast:
    """The scenario's traffic forecast (learners on shortest paths), computed once per
    scenario in this process."""
    key = f"{net.name}:{scenario.model_dump_json()}"
    if key not in _FORECASTS:
        _FORECASTS.clear()  # one scenario's table at a time: they are (edges x windows)
        _FORECASTS[key] = TrafficForecast.simulate(net, scenario)
    return _FORECASTS[key]


async def plan(request: PlanRequest, learners: Learners | None = None
               ) -> tuple[TeamOutcome, bool, RoutingCore, CityView]:
    """Run (or fetch from the cache) the expert team, its critic judging under
    ``learners``; ``(outcome, cached, core, view)``."""
    outcome, cached, team, view = await plan_team(request, learners)
    return outcome, cached, team.core, view


async def plan_team(request: PlanRequest, learners: Learners | None = None
                    ) -> tuple[TeamOutcome, bool, ExpertTeam, CityView]:
    """:func:`plan` with the team itself (its baseline and the plan's execution are reused
    by :func:`_one`, its fleet sample by the chat; a cached answer's team has run no
    check)."""
    net = load_city(request.scenario.city)
    core = RoutingCore(net, request.scenario)
    view = CityView(net)
    planned = [a for b in demo_sample(core.n, request.config, core.scenario.seed,
                                      request.variant) for a in b]
    sample = simulation_sample(core, request.config, planned, request.variant)
    forecast = await asyncio.to_thread(_forecast, *((sample.net, sample.scenario) if sample
                                                    else (net, core.scenario)))
    card = await asyncio.to_thread(chat_card, request.model, request.ollama_host)
    client = make_client(request.model, net, view, host=request.ollama_host,
                         seed=core.scenario.seed, timeout_s=request.timeout_s, card=card,
                         forecast=forecast)
    learners = learners or UNTRAINED
    team = ExpertTeam(core, view, client, request.config, learners,
                      _behaviour_refs(view, request.behaviour), request.variant, forecast,
                      sample)
    if request.first_plan_only:  # one round, after the groups were sized for max_rounds
        team.config = team.config.model_copy(update={"max_rounds": 1})
    key = cache_key(team, card, request.variant)
    cacheable = request.use_cache and learners.cacheable
    if cacheable and (hit := _load_cached(key, core)) is not None:
        return hit, True, team, view
    outcome = await team.run()
    if cacheable and outcome.verdict.accepted:
        _store(key, outcome)
    return outcome, False, team, view


async def plan_scenario(scenario: Scenario, model: str = "offline", variant: int = 0,
                        config: TeamConfig | None = None, learners: Learners | None = None,
                        behaviour: dict[int, list[int]] | None = None,
                        ollama_host: str | None = None, timeout_s: float = 120.0,
                        use_cache: bool = True) -> tuple[TeamOutcome, bool, RoutingCore]:
    """:func:`plan` with keyword arguments; returns ``(outcome, cached, core)``."""
    request = PlanRequest(scenario=scenario, model=model, variant=variant,
                          config=config or TeamConfig(), behaviour=behaviour,
                          ollama_host=ollama_host, timeout_s=timeout_s, use_cache=use_cache)
    outcome, cached, core, _ = await plan(request, learners)
    return outcome, cached, core


def rejected_agents(outcome: TeamOutcome, limit: int = 20) -> list[dict]:
    """``[{agent, reason}]`` of a rejected final verdict (empty when accepted)."""
    v = outcome.verdict
    if v.accepted:
        return []
    terms = {b.agent_id: b for b in v.violations}
    rows = []
    for a in v.violating_agents[:limit]:
        b = terms.get(a)
        why = (f"bound {b.bound:.1f} > epsilon {v.epsilon:.1f} (external {b.external_term:.0f}, "
               f"divergence {b.divergence_term:.0f}, {b.group_size - 1} co-occupants)"
               if b else v.reason[:160])
        rows.append({"agent": a, "reason": why})
    if not rows:  # no agent at fault: e.g. the plan is slower than the baseline
        rows.append({"agent": None, "reason": v.reason[:200]})
    return rows


async def _one(request: PlanRequest, out_dir: Path, filter_by_bound: bool,
               learners: Learners | None = None) -> BatchResult:
    outcome, cached, team, _ = await plan_team(request, learners)
    learners = team.learners
    core = team.core
    sc, model, variant = core.scenario, request.model, request.variant
    sp = team.baseline_metrics["mean_travel_time"]  # the team's shortest-path execution
    accepted = outcome.verdict.accepted
    mean_tt = outcome.verdict.mean_travel_time
    usage = [] if cached else outcome.usage
    path = None
    if outcome.fallback and filter_by_bound:
        _warn_once(f"no plan for {sc.city} seed {sc.seed} passed the critic in "
                   f"{outcome.max_rounds} rounds; keeping the plan with the lowest bound "
                   "(fallback, marked in its metadata)")
    if outcome.routes and (accepted or not filter_by_bound or outcome.fallback):
        # the critic's execution of this very plan, else (a cached answer) executed now (on
        # the fleet sample where the team simulates one)
        run = team.execution(outcome) if not cached else None
        run = run or execute(team.sim_net, team.sim_scenario,
                             routes=team.simulated_routes(outcome.routes))
        mean_tt = run.metrics["mean_travel_time"]
        batch_id = f"{sc.city}-n{sc.n_agents}-s{sc.seed}-v{variant}-{model.replace(':', '_')}"
        meta = DemoMeta(
            batch_id="".join(c if c.isalnum() or c in "-_." else "_" for c in batch_id),
            scenario=sc, routes=outcome.routes, demo_agents=outcome.demo_agents,
            fleet_sample=team.sample.info if team.sample else None,
            model_spec=model, source="expert-team",
            accepted=accepted, verdict=outcome.verdict.model_dump(mode="json"),
            rounds=outcome.rounds, model_calls=0 if cached else outcome.model_calls,
            transcript=outcome.transcript,
            metrics={**run.metrics, "mean_return": float(run.returns.mean()),
                     "shortest_path_mean_travel_time": sp},
            extra={"model": describe(model), "termination": outcome.termination,
                   **_injected(team, outcome, cached),
                   "max_rounds": outcome.max_rounds, "accepted_round": outcome.accepted_round,
                   "variant": variant, "filter_by_bound": filter_by_bound, "cached": cached,
                   "groups": outcome.groups,
                   "bound": {**team.config.bound.model_dump(mode="json"),
                             "version": learners.bound_version(team.config.bound)},
                   "learners": learners.source,
                   "fallback": outcome.fallback and filter_by_bound,
                   "reference_bound": outcome.reference_bound,
                   "usage": usage_totals(usage),
                   "usage_per_call": [u.model_dump() for u in usage]})
        path = str(save_batch(Path(out_dir), team.demonstration_rows(run), meta))
    return BatchResult(path=path, scenario_seed=sc.seed, variant=variant, accepted=accepted,
                       fallback=outcome.fallback and filter_by_bound,
                       accepted_round=outcome.accepted_round, rounds=outcome.rounds,
                       model_calls=0 if cached else outcome.model_calls, cached=cached,
                       mean_travel_time=None if mean_tt is None or np.isnan(mean_tt)
                       else float(mean_tt),
                       shortest_path_mean_travel_time=sp, rejected=rejected_agents(outcome),
                       usage=usage,
                       bound_version=learners.bound_version(team.config.bound),
                       learners=learners.source)


def _injected(team: ExpertTeam, outcome: TeamOutcome, cached: bool) -> dict:
    """For a fallible expert (:mod:`relied.agents.fallible`): the herding errors it injected
    in this chat (``{round, agents, kind}`` per group plan) and the agents of the returned
    plan that drive one; ``{}`` for any other model."""
    inner = team.client.inner
    if not isinstance(inner, FallibleOfflineClient):
        return {}
    return {"injected": None if cached else inner.injections,
            "herding_agents": len(herding_agents(outcome.plan))}


class GenerationError(ModelError):
    """A batch failed; ``results`` are the batches finished (and saved) before it."""

    def __init__(self, cause: Exception, results: list[BatchResult]):
        super().__init__(str(cause))
        self.results = results


async def agenerate(jobs: list[tuple[Scenario, int]], out_dir: Path, model: str = "offline",
                    filter_by_bound: bool = True, config: TeamConfig | None = None,
                    progress: bool = False, concurrency: int = 4,
                    learners: Learners | None = None,
                    behaviour: dict[int, list[int]] | None = None,
                    ollama_host: str | None = None, timeout_s: float = 120.0,
                    use_cache: bool = True) -> list[BatchResult]:
    """Generate ``(scenario, variant)`` jobs concurrently; results in job order. When a job
    fails the others still finish (their batches are saved), then :class:`GenerationError`
    carries the first failure and the finished results. ``learners``: what the critic judges
    every plan under (default: untrained, no trial update)."""
    config = config or TeamConfig()
    gate = asyncio.Semaphore(concurrency)
    done: dict[int, BatchResult] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"expert plans ({describe(model)})", total=len(jobs))

        async def run(k: int, sc: Scenario, variant: int) -> None:
            request = PlanRequest(scenario=sc, model=model, variant=variant, config=config,
                                  behaviour=behaviour, ollama_host=ollama_host,
                                  timeout_s=timeout_s, use_cache=use_cache,
                                  first_plan_only=not filter_by_bound)
            async with gate:
                done[k] = await _one(request, out_dir, filter_by_bound, learners)
            bar.advance(task)

        outcomes = await asyncio.gather(*(run(k, sc, v) for k, (sc, v) in enumerate(jobs)),
                                        return_exceptions=True)
    failures = [e for e in outcomes if isinstance(e, BaseException)]
    if failures:
        if not isinstance(failures[0], Exception):
            raise failures[0]
        raise GenerationError(failures[0], [done[k] for k in sorted(done)]) from failures[0]
    return [done[k] for k in range(len(jobs))]


def generate_demonstrations(
    scenario: Scenario, out_dir: Path, model: str = "offline", batches: int = 1,
    filter_by_bound: bool = True, learners: Learners | None = None,
    behaviour: dict[int, list[int]] | None = None, progress: bool = False, **kw,
) -> list[Path]:
    """Plan ``batches`` variants of ``scenario`` with the expert team and save them as
    demonstration batches; returns the ``.json`` paths of the saved batches.

    ``filter_by_bound=False`` keeps the planner's first plan whatever the critic says (the LEED
    baseline; the team is the same, groups included, but the chat ends after the critic judged
    that first plan); otherwise accepted plans are saved, and where no plan passed within
    ``max_rounds`` the best-bound plan (``accepted=False``, ``extra["fallback"]=True``).
    ``learners`` (:class:`~relied.experts.learners.Learners`): the learners' current policy,
    previous policy and trial update the critic judges under (None: untrained, uniform over
    valid actions, no trial: bound version 4); each batch's ``extra["bound"]["version"]`` and
    ``extra["learners"]`` say which.
    ``behaviour``: recent routes per agent (OSM ids), shown in the prompt. Other keywords:
    ``config`` (:class:`TeamConfig`), ``ollama_host``, ``timeout_s``, ``use_cache``,
    ``concurrency``. Token usage and wall time of the model calls are in each batch's
    ``extra["usage"]``.
    """
    jobs = [(scenario, b) for b in range(batches)]
    results = asyncio.run(agenerate(jobs, out_dir, model, filter_by_bound, progress=progress,
                                    learners=learners, behaviour=behaviour, **kw))
    return [Path(r.path) for r in results if r.path is not None]

