"""CLI verbs of the expert team: ``relied experts generate|ask|chat`` and ``relied models``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Annotated

import typer

from relied.agents.clients import (
    ModelError,
    describe,
    list_ollama_models,
    ollama_host,
    ollama_model_details,
    resolve_spec,
)
from relied.agents.generate import agenerate, ask, plan_scenario
from relied.agents.team import TeamConfig
from relied.commands.output import JsonFlag, console, err, fail, metric_table
from relied.env.cities import CityError
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig

DEFAULT_EPSILON = BoundConfig().epsilon

experts_app = typer.Typer(help="The expert team: plan routes, critic, demonstrations.",
                          no_args_is_help=True)

City = Annotated[str, typer.Option(help="shipped name, .osm path, or place:<query>")]
Agents = Annotated[int, typer.Option(min=1, help="number of vehicle agents")]
Seed = Annotated[int, typer.Option(help="seed of OD sampling")]
ScenarioOpt = Annotated[Path | None, typer.Option(help="Scenario JSON (overrides city/agents)")]
Model = Annotated[str, typer.Option(help="offline | auto | ollama:<model>")]
Host = Annotated[str | None, typer.Option("--ollama-host", help="Ollama URL ($OLLAMA_HOST)")]
Epsilon = Annotated[float, typer.Option(help="critic's largest accepted bound per agent")]
Rounds = Annotated[int, typer.Option(min=1, help="planner -> critic rounds")]
Timeout = Annotated[float, typer.Option(help="seconds per model call")]
USER_ERRORS = (CityError, ModelError, ValueError, OSError)
# AutoGen logs a traceback for every agent error it re-raises; ours are reported in one line.
logging.getLogger("autogen_core").setLevel(logging.CRITICAL)


def _scenario(scenario: Path | None, city: str, agents: int, seed: int) -> Scenario:
    return Scenario.load(scenario) if scenario else Scenario(city=city, n_agents=agents, seed=seed)


def _config(epsilon: float, max_rounds: int, group_size: int = 50) -> TeamConfig:
    return TeamConfig(max_rounds=max_rounds, group_size=group_size,
                      bound=BoundConfig(epsilon=epsilon))


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


@experts_app.command()
def generate(
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline",
    batches: Annotated[int, typer.Option(min=1, help="plan variants per scenario")] = 1,
    scenarios: Annotated[int, typer.Option(min=1, help="scenarios (seeds seed..) run "
                                           "concurrently")] = 1,
    out: Annotated[Path, typer.Option(help="demonstration store directory")] = Path("demos"),
    epsilon: Epsilon = DEFAULT_EPSILON, max_rounds: Rounds = 3,
    group_size: Annotated[int, typer.Option(min=1, help="agents per planner")] = 50,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="keep first plans whatever the "
                                            "critic says (LEED)")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ignore cached answers")] = False,
    ollama: Host = None, timeout: Timeout = 120.0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Plan routes with the expert team and save accepted plans as demonstrations."""
    try:
        base = _scenario(scenario, city, agents, seed)
        spec = resolve_spec(model, ollama)
        jobs = [(base.model_copy(update={"seed": base.seed + k}) if k else base, b)
                for k in range(scenarios) for b in range(batches)]
        results = asyncio.run(agenerate(
            jobs, out, spec, not no_filter, _config(epsilon, max_rounds, group_size),
            progress=progress and not as_json, ollama_host=ollama, timeout_s=timeout,
            use_cache=not no_cache))
    except USER_ERRORS as exc:
        fail(_first_line(exc))
    n = len(results)
    accepted = [r for r in results if r.accepted]

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else None

    summary = {
        "model": spec, "model_label": describe(spec), "city": base.city, "agents": base.n_agents,
        "plans": n, "accepted": len(accepted),
        "accepted_first_round": sum(r.accepted_round == 1 for r in results) / n,
        "accepted_within_two_rounds": sum(r.accepted_round in (1, 2) for r in results) / n,
        "model_calls": sum(r.model_calls for r in results),
        "model_calls_per_accepted_plan": (sum(r.model_calls for r in results) / len(accepted)
                                          if accepted else None),
        "cached": sum(r.cached for r in results),
        "mean_travel_time": mean([r.mean_travel_time for r in accepted]),
        "shortest_path_mean_travel_time": mean([r.shortest_path_mean_travel_time
                                                for r in results]),
        "saved": [r.path for r in results if r.path],
    }
    if as_json:
        print(json.dumps(summary))
        return
    shown = {k: v for k, v in summary.items() if k != "saved"}
    console.print(metric_table(f"expert plans: {summary['model_label']}", shown))
    console.print(f"saved {len(summary['saved'])} batches under {out}")


@experts_app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="e.g. 'why did agent 3 take this route?'")],
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline", epsilon: Epsilon = DEFAULT_EPSILON,
    max_rounds: Rounds = 3, ollama: Host = None, timeout: Timeout = 120.0,
    as_json: JsonFlag = False,
) -> None:
    """Ask the expert team one question about a scenario; prints the answer."""
    if not question.strip():
        fail("the question is empty; e.g. relied experts ask 'why did agent 3 take this route?'")
    try:
        sc = _scenario(scenario, city, agents, seed)
        spec = resolve_spec(model, ollama)
        answer, outcome = asyncio.run(ask(sc, question, spec, config=_config(epsilon, max_rounds),
                                          ollama_host=ollama, timeout_s=timeout))
    except USER_ERRORS as exc:
        fail(_first_line(exc))
    if as_json:
        print(json.dumps({"question": question, "answer": answer, "model": spec,
                          "accepted": outcome.verdict.accepted, "rounds": outcome.rounds}))
        return
    console.print(answer, highlight=False, markup=False)


CHAT_HELP = ("Ask about the plan (e.g. 'why agent 3?'), 'verdict' for the critic's verdict, "
             "'replan' for a new plan variant, 'quit' to leave.")


@experts_app.command()
def chat(
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline", epsilon: Epsilon = DEFAULT_EPSILON,
    max_rounds: Rounds = 3, ollama: Host = None, timeout: Timeout = 120.0,
) -> None:
    """Talk with the expert team about a scenario (a REPL)."""
    try:
        sc = _scenario(scenario, city, agents, seed)
        spec = resolve_spec(model, ollama)
        config = _config(epsilon, max_rounds)
        variant = 0
        outcome, _, _ = asyncio.run(plan_scenario(sc, spec, variant, config, ollama_host=ollama,
                                                  timeout_s=timeout))
    except USER_ERRORS as exc:
        fail(_first_line(exc))
    console.print(f"expert team ({describe(spec)}) planned {sc.n_agents} agents in "
                  f"{outcome.rounds} round(s). {CHAT_HELP}", highlight=False)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if line in ("quit", "exit", "q"):
            break
        if not line:
            continue
        try:
            if line == "verdict":
                v = outcome.verdict
                console.print(f"{'accepted' if v.accepted else 'rejected'} in round {v.round}: "
                              f"{v.reason}", highlight=False, markup=False)
                continue
            if line.startswith("replan"):
                variant += 1
                outcome, _, _ = asyncio.run(plan_scenario(sc, spec, variant, config,
                                                          ollama_host=ollama, timeout_s=timeout))
                v = outcome.verdict
                console.print(f"new plan (variant {variant}): "
                              f"{'accepted' if v.accepted else 'rejected'} after {outcome.rounds}"
                              f" round(s): {v.reason}", highlight=False, markup=False)
                continue
            answer, _ = asyncio.run(ask(sc, line, spec, outcome=outcome, ollama_host=ollama,
                                        timeout_s=timeout))
            console.print(f"team> {answer}", highlight=False, markup=False)
        except USER_ERRORS as exc:
            err.print(f"error: {_first_line(exc)}", highlight=False, markup=False)


def models(ollama: Host = None, as_json: JsonFlag = False) -> None:
    """List the models Ollama serves, or say that the offline planner will be used."""
    host = ollama_host(ollama)
    try:
        names = list_ollama_models(ollama)
        reachable, note = True, ""
    except ModelError as exc:
        names, reachable, note = [], False, _first_line(exc)
    details = {}
    for name in names:
        try:
            details[name] = ollama_model_details(name, ollama)
        except ModelError:
            details[name] = None
    if as_json:
        print(json.dumps({"host": host, "reachable": reachable, "models": names,
                          "details": details, "fallback": "offline", "note": note}))
        return
    if not reachable:
        console.print(f"{note}\nThe offline planner (deterministic, not an LLM) will be used.",
                      highlight=False, markup=False)
        return
    if not names:
        console.print(f"Ollama at {host} has no models; pull one (e.g. 'ollama pull "
                      "qwen2.5:7b') or the offline planner will be used.", highlight=False)
        return
    for name in names:
        d = details[name] or {}
        info = ", ".join(str(v) for k, v in d.items() if v and k != "capabilities")
        console.print(f"ollama:{name}  {info}", highlight=False, markup=False)
