"""Demonstrations from the expert team, with an on-disk cache and concurrent generation.

Batch ``b`` of a scenario uses the same resolved scenario (same OD pairs and departures, the
ones training runs on); for ``b > 0`` the task asks for plan variant ``b`` (the offline planner
routes agents in a seeded permuted order; an LLM is asked for a different valid plan), so the
batches differ while describing the same training problem.

Cache: a team outcome is stored under ``$RELIED_EXPERT_CACHE/<key>.json`` (default
``$RELIED_CACHE_DIR/experts``) with ``key`` the hash of (resolved scenario, model spec, prompts,
team and bound settings); an identical request is answered from disk with zero model calls.
With ``policy_probs`` the verdict depends on the learners, so the cache is not used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from rich.progress import Progress

from relied.agents.clients import check_ollama_model, describe, make_client
from relied.agents.prompt import EXPLAINER_SYSTEM, PLANNER_SYSTEM, data_block, task_prompt
from relied.agents.team import ExpertTeam, TeamConfig, TeamOutcome
from relied.agents.view import CityView
from relied.env.cities import cache_dir, load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario, index_of
from relied.experts.critic import execute
from relied.experts.demos import DemoMeta, save_batch

CACHE_VERSION = 1


class BatchResult(BaseModel):
    """Summary of one generated batch (``path`` is None when filtered out)."""

    path: str | None
    scenario_seed: int
    variant: int
    accepted: bool
    accepted_round: int | None
    rounds: int
    model_calls: int
    cached: bool
    mean_travel_time: float
    shortest_path_mean_travel_time: float


def _cache_key(scenario: Scenario, spec: str, prompt: str, config: TeamConfig) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "scenario": scenario.model_dump(mode="json"),
                       "model": spec, "system": PLANNER_SYSTEM, "prompt": prompt,
                       "config": config.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def expert_cache_dir() -> Path:
    """``$RELIED_EXPERT_CACHE``, else ``$RELIED_CACHE_DIR/experts``."""
    env = os.environ.get("RELIED_EXPERT_CACHE")
    return Path(env) if env else cache_dir() / "experts"


def _cache_path(key: str) -> Path:
    return expert_cache_dir() / f"{key}.json"


def _load_cached(key: str) -> TeamOutcome | None:
    path = _cache_path(key)
    try:
        return TeamOutcome.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def _store(key: str, outcome: TeamOutcome) -> None:
    path = _cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome.model_dump_json())
    tmp.replace(path)


async def plan_scenario(scenario: Scenario, model: str = "offline", variant: int = 0,
                        config: TeamConfig | None = None, policy_probs=None,
                        behaviour: dict[int, list[int]] | None = None,
                        ollama_host: str | None = None, timeout_s: float = 120.0,
                        use_cache: bool = True) -> tuple[TeamOutcome, bool, RoutingCore]:
    """Run (or fetch from the cache) the expert team on one scenario.

    Returns ``(outcome, cached, core)``.
    """
    config = config or TeamConfig()
    net = load_city(scenario.city)
    core = RoutingCore(net, scenario)
    view = CityView(net)
    behaviour_idx = None
    if behaviour:
        behaviour_idx = {int(k): [int(x) for x in v] for k, v in behaviour.items()}
    load = None
    if behaviour_idx:
        load = np.zeros(net.n_edges)
        for route in behaviour_idx.values():
            try:
                nodes = index_of(net, route).tolist()
            except ValueError:
                continue
            for u, v in zip(nodes[:-1], nodes[1:], strict=False):
                e = net.edge_between(u, v)
                if e >= 0:
                    load[e] += 1
    prompt = task_prompt(core, view, variant, behaviour_idx, load)
    key = _cache_key(core.scenario, model, prompt, config)
    cacheable = use_cache and policy_probs is None
    if cacheable and (hit := _load_cached(key)) is not None:
        return hit, True, core
    if model.startswith("ollama:"):
        check_ollama_model(model, ollama_host)
    client = make_client(model, net, view, host=ollama_host, seed=core.scenario.seed,
                         timeout_s=timeout_s)
    team = ExpertTeam(core, view, client, config, policy_probs, load)
    outcome = await team.run(prompt)
    if cacheable:
        _store(key, outcome)
    return outcome, False, core


async def _one(scenario: Scenario, out_dir: Path, model: str, variant: int, config: TeamConfig,
               filter_by_bound: bool, **kw) -> BatchResult:
    outcome, cached, core = await plan_scenario(scenario, model, variant, config, **kw)
    net, sc = core.net, core.scenario
    sp = execute(net, sc).metrics["mean_travel_time"]
    accepted = outcome.verdict.accepted
    mean_tt = outcome.verdict.mean_travel_time
    path = None
    if outcome.routes and (accepted or not filter_by_bound):
        run = execute(net, sc, routes=[index_of(net, r).tolist() for r in outcome.routes])
        mean_tt = run.metrics["mean_travel_time"]
        batch_id = f"{sc.city}-n{sc.n_agents}-s{sc.seed}-v{variant}-{model.replace(':', '_')}"
        meta = DemoMeta(
            batch_id="".join(c if c.isalnum() or c in "-_." else "_" for c in batch_id),
            scenario=sc, routes=outcome.routes, model_spec=model, source="expert-team",
            accepted=accepted, verdict=outcome.verdict.model_dump(mode="json"),
            rounds=outcome.rounds, model_calls=0 if cached else outcome.model_calls,
            transcript=outcome.transcript,
            metrics={**run.metrics, "mean_return": float(run.returns.mean()),
                     "shortest_path_mean_travel_time": sp},
            extra={"model": describe(model), "termination": outcome.termination,
                   "max_rounds": outcome.max_rounds, "accepted_round": outcome.accepted_round,
                   "variant": variant, "filter_by_bound": filter_by_bound, "cached": cached,
                   "bound": config.bound.model_dump(mode="json")})
        path = str(save_batch(Path(out_dir), run.traj, meta))
    return BatchResult(path=path, scenario_seed=sc.seed, variant=variant, accepted=accepted,
                       accepted_round=outcome.accepted_round, rounds=outcome.rounds,
                       model_calls=0 if cached else outcome.model_calls, cached=cached,
                       mean_travel_time=float(mean_tt if mean_tt is not None else np.nan),
                       shortest_path_mean_travel_time=sp)


async def agenerate(jobs: list[tuple[Scenario, int]], out_dir: Path, model: str = "offline",
                    filter_by_bound: bool = True, config: TeamConfig | None = None,
                    progress: bool = False, concurrency: int = 4, **kw) -> list[BatchResult]:
    """Generate ``(scenario, variant)`` jobs concurrently; results in job order."""
    config = config or TeamConfig()
    if not filter_by_bound:
        config = config.model_copy(update={"max_rounds": 1})
    gate = asyncio.Semaphore(concurrency)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"expert plans ({describe(model)})", total=len(jobs))

        async def run(sc: Scenario, variant: int) -> BatchResult:
            async with gate:
                result = await _one(sc, out_dir, model, variant, config, filter_by_bound, **kw)
            bar.advance(task)
            return result

        return list(await asyncio.gather(*(run(sc, v) for sc, v in jobs)))


def generate_demonstrations(
    scenario: Scenario, out_dir: Path, model: str = "offline", batches: int = 1,
    filter_by_bound: bool = True,
    policy_probs: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    behaviour: dict[int, list[int]] | None = None, progress: bool = False, **kw,
) -> list[Path]:
    """Plan ``batches`` variants of ``scenario`` with the expert team and save them as
    demonstration batches; returns the ``.json`` paths of the saved batches.

    ``filter_by_bound=False`` keeps the planner's first plan whatever the critic says (the LEED
    baseline); otherwise only accepted plans are saved. ``policy_probs`` gives the learners'
    current action probabilities for the divergence term (None: uniform over valid actions).
    ``behaviour``: recent routes per agent (OSM ids), shown in the prompt. Other keywords:
    ``config`` (:class:`TeamConfig`), ``ollama_host``, ``timeout_s``, ``use_cache``,
    ``concurrency``.
    """
    jobs = [(scenario, b) for b in range(batches)]
    results = asyncio.run(agenerate(jobs, out_dir, model, filter_by_bound, progress=progress,
                                    policy_probs=policy_probs, behaviour=behaviour, **kw))
    return [Path(r.path) for r in results if r.path is not None]


async def ask(scenario: Scenario, question: str, model: str = "offline",
              outcome: TeamOutcome | None = None, **kw) -> tuple[str, TeamOutcome]:
    """One question to the team about ``scenario``: the team plans (or reuses ``outcome``),
    then the model answers from the plan and the critic's verdict."""
    from autogen_agentchat.agents import AssistantAgent

    if outcome is None:
        outcome, _, core = await plan_scenario(scenario, model, **kw)
        net = core.net
    else:
        net = load_city(scenario.city)
    client = make_client(model, net, host=kw.get("ollama_host"),
                         timeout_s=kw.get("timeout_s", 120.0))
    agent = AssistantAgent("explainer", model_client=client, system_message=EXPLAINER_SYSTEM)
    payload = {"question": question[:2000], "plan": outcome.plan.model_dump(mode="json"),
               "verdict": outcome.verdict.model_dump(mode="json")}
    result = await agent.run(task=f"Question: {question[:2000]}\n{data_block(payload)}")
    return result.messages[-1].to_text(), outcome
