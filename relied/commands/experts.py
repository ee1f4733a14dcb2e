"""CLI verbs of the expert team: ``relied experts generate|ask|chat`` and ``relied models``.

Errors are one line naming the cause and the fix, exit status 2; with ``--json`` the same
message is also printed on stdout as ``{"error": ...}``. ``--json`` output is strict JSON
(undefined figures are ``null``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from relied.agents.clients import (
    ModelError,
    chat_card,
    describe,
    list_ollama_models,
    ollama_host,
    ollama_model_details,
    resolve_spec,
    usage_totals,
)
from relied.agents.generate import GenerationError, PlanRequest, agenerate
from relied.agents.team import TeamConfig
from relied.commands.output import (
    JsonFlag,
    console,
    emit_json,
    error_message,
    fail,
    flag_message,
    metric_table,
    print_error,
)
from relied.env.cities import CityError
from relied.env.sample import DEFAULT_SIM_VEHICLES
from relied.env.scenario import Scenario
from relied.experts.bound import BOUND_VERSION, BoundConfig

DEFAULT_EPSILON = BoundConfig().epsilon

experts_app = typer.Typer(help="The expert team: plan routes, critic, demonstrations.",
                          no_args_is_help=True)

City = Annotated[str, typer.Option(help="shipped name, .osm path, or place:<query>")]
Agents = Annotated[int, typer.Option(min=1, help="number of vehicle agents")]
Seed = Annotated[int, typer.Option(help="seed of OD sampling")]
ScenarioOpt = Annotated[Path | None, typer.Option(help="Scenario JSON (overrides city/agents)")]
Model = Annotated[str, typer.Option(
    help="offline | auto | ollama:<model> | offline-fallible:<p>[:<kind>] (the offline planner "
         "with injected herding errors, for stress tests; not an LLM)")]
Host = Annotated[str | None, typer.Option("--ollama-host", help="Ollama URL ($OLLAMA_HOST)")]
Epsilon = Annotated[float, typer.Option(
    help="critic's threshold, a ratio: a plan passes when the mean of its agents' scaled "
         "stationarity bounds is strictly below this ratio times that of the learners' current "
         "behaviour (the free-flow shortest paths when unknown)")]
Rounds = Annotated[int, typer.Option(min=1, help="planner -> critic rounds")]
SimVehicles = Annotated[int, typer.Option(min=0, help="most vehicles simulated: a larger fleet "
                                          "is simulated as a seeded sample of about this many "
                                          "on the network with capacities scaled by its share "
                                          "(0: never sample)")]
Timeout = Annotated[float, typer.Option(help="seconds per model call, counted from when it "
                                        "is sent")]
Run = Annotated[Path | None, typer.Option(
    "--run", help="judge plans under the learners of this training run (its last "
    "checkpoint: policy, optimiser, lambda) and their update (bound versions 5, 6); default: "
    "the untrained learners a new 'relied train --seed SEED' run of this city and agent count "
    "starts from (seeded, default architecture)")]
BoundVersion = Annotated[int | None, typer.Option(
    min=5, max=6, help="the critic's bound: 6, the measured lookahead of the learners' whole "
    "next update; 5, the analytic bound with their trial update (docs/experts.md) "
    "[with --run: the version that run trains with; else 6]")]
USER_ERRORS = (CityError, ModelError, ValueError, OSError)
# Scenario / TeamConfig / BoundConfig fields and the flags that set them
FLAGS = {"n_agents": "--agents", "seed": "--seed", "city": "--city", "epsilon": "--epsilon",
         "max_rounds": "--max-rounds", "group_size": "--group-size", "timeout_s": "--timeout",
         "demo_agents": "--demo-agents", "sim_vehicles": "--sim-vehicles",
         "version": "--bound-version"}
# AutoGen logs a traceback for every agent error it re-raises; ours are reported in one line.
logging.getLogger("autogen_core").setLevel(logging.CRITICAL)


def _scenario(scenario: Path | None, city: str, agents: int, seed: int) -> Scenario:
    if scenario is None:
        return Scenario(city=city, n_agents=agents, seed=seed)
    try:
        text = Path(scenario).read_text()
    except OSError as exc:
        raise ValueError(f"--scenario {scenario}: cannot read it ({exc.strerror or exc})"
                         ) from None
    try:
        return Scenario.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(flag_message(exc, source=f"--scenario {scenario}")) from None


def _config(epsilon: float, max_rounds: int, group_size: int = 50,
            demo_agents: int = 500, sim_vehicles: int = DEFAULT_SIM_VEHICLES,
            bound_version: int = BOUND_VERSION) -> TeamConfig:
    if not math.isfinite(epsilon):
        raise ValueError(f"--epsilon: {epsilon} is invalid: must be a finite number > 0 "
                         f"(default {DEFAULT_EPSILON:g})")
    return TeamConfig(max_rounds=max_rounds, group_size=group_size,
                      demo_agents=demo_agents or None, sim_vehicles=sim_vehicles or None,
                      bound=BoundConfig(epsilon=epsilon, version=bound_version))


def _bound_version(flag: int | None, run: Path | None) -> int:
    """``--bound-version``, else the version ``run`` trains with (its ``config.json``; call
    after :func:`_learners`, which names a run that cannot be read), else training's
    default."""
    if flag is not None:
        return flag
    if run is None:
        return BOUND_VERSION
    from relied.rl.config import TrainConfig

    return TrainConfig.load(Path(run) / "config.json").bound_version


def _learners(base: Scenario, run: Path | None):
    """The learners the critic judges under (:class:`~relied.experts.learners.Learners`):
    those of ``run``'s last checkpoint, else the seeded untrained learners of a new run of
    ``base``'s city and agents with its seed (default architecture)."""
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.rl.config import TrainConfig
    from relied.rl.trial import fresh_learners, run_learners

    core = RoutingCore(load_city(base.city), base)
    if run is not None:
        return run_learners(run, core)
    return fresh_learners(TrainConfig(city=base.city, n_agents=base.n_agents, seed=base.seed),
                          core)


def _message(exc: Exception) -> str:
    """One line for a user error; a bad value names its flag and the allowed range."""
    return flag_message(exc, FLAGS) if isinstance(exc, ValidationError) else error_message(exc)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


@experts_app.command()
def generate(
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline",
    batches: Annotated[int, typer.Option(min=1, help="plan variants per scenario")] = 1,
    scenarios: Annotated[int, typer.Option(min=1, help="scenarios (seeds seed..) run "
                                           "concurrently")] = 1,
    out: Annotated[Path, typer.Option(help="demonstration store directory")] = Path("demos"),
    epsilon: Epsilon = DEFAULT_EPSILON, max_rounds: Rounds = 3,
    group_size: Annotated[int, typer.Option(min=1, help="largest group of agents per planner "
                                            "(split further to fit the model's context)")] = 50,
    demo_agents: Annotated[int, typer.Option(min=0, help="most learners planned and "
                                             "demonstrated per scenario: above it a seeded "
                                             "sample from every planner block, the others "
                                             "drive shortest paths (0: all)")] = 500,
    sim_vehicles: SimVehicles = DEFAULT_SIM_VEHICLES,
    bound_version: BoundVersion = None,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="keep first plans whatever the "
                                            "critic says (LEED)")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ignore cached answers")] = False,
    run: Run = None,
    ollama: Host = None, timeout: Timeout = 120.0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Plan routes with the expert team and save accepted plans as demonstrations.

    The critic judges every plan by the measured lookahead of the learners' whole next update
    with the plan's demonstrations (bound version 6; --bound-version 5: the analytic bound with
    their trial update on the plan; with --run the default is the version that run trains
    with), under learners: their current policy and their update.
    These are the learners of --run, else the seeded untrained learners a new training run
    starts from. Where no plan of a scenario
    passes the critic within --max-rounds, its lowest-bound plan is saved as a fallback batch
    (not accepted; metadata extra.fallback). Exit status: 0 when a plan was accepted (or saved
    with --no-filter), 1 when the critic accepted no plan (the reasons are shown; fallback
    batches are saved and listed), 2 on an error.
    """
    partial = None
    try:
        base = _scenario(scenario, city, agents, seed)
        spec = resolve_spec(model, ollama)
        learners = _learners(base, run)
        config = _config(epsilon, max_rounds, group_size, demo_agents, sim_vehicles,
                         _bound_version(bound_version, run))
        jobs = [(base.model_copy(update={"seed": base.seed + k}) if k else base, b)
                for k in range(scenarios) for b in range(batches)]
        results = asyncio.run(agenerate(
            jobs, out, spec, not no_filter, config, progress=progress and not as_json,
            ollama_host=ollama, timeout_s=timeout, use_cache=not no_cache,
            learners=learners))
    except GenerationError as exc:
        partial = exc
    except (*USER_ERRORS, ValidationError) as exc:
        fail(_message(exc), as_json)
    if partial is not None:
        saved = [r.path for r in partial.results if r.path]
        kept = f"; {len(saved)} batch(es) finished before it are saved under {out}" \
            if saved else ""
        fail(f"{_message(partial.__cause__ or partial)}{kept}", as_json)
    n = len(results)
    accepted = [r for r in results if r.accepted]

    def saved_as_fallback(r) -> bool:  # with --no-filter a rejected plan is kept as LEED's
        return bool(r.fallback and r.path and not no_filter)

    fallback = [r for r in results if saved_as_fallback(r)]
    usage = [u for r in results for u in r.usage]
    summary = {
        "model": spec, "model_label": describe(spec), "city": base.city, "agents": base.n_agents,
        "plans": n, "accepted": len(accepted), "fallback": len(fallback),
        "accepted_first_round": sum(r.accepted_round == 1 for r in results) / n,
        "accepted_within_two_rounds": sum(r.accepted_round in (1, 2) for r in results) / n,
        "model_calls": sum(r.model_calls for r in results),
        "model_calls_per_accepted_plan": (sum(r.model_calls for r in results) / len(accepted)
                                          if accepted else None),
        "cached": sum(r.cached for r in results),
        "mean_travel_time": _mean([r.mean_travel_time for r in accepted]),
        "shortest_path_mean_travel_time": _mean([r.shortest_path_mean_travel_time
                                                for r in results]),
        "usage": usage_totals(usage),
        "bound_version": results[0].bound_version if results else None,
        "learners": learners.source,
        "rejected": [{"scenario_seed": r.scenario_seed, "variant": r.variant,
                      "fallback": saved_as_fallback(r), **row}
                     for r in results if not r.accepted for row in r.rejected],
        "saved": [r.path for r in results if r.path],
    }
    if as_json:
        emit_json(summary)
    else:
        shown = {k: v for k, v in summary.items() if k not in ("saved", "rejected", "usage")}
        shown.update({f"usage.{k}": v for k, v in summary["usage"].items()})
        console.print(metric_table(f"expert plans: {summary['model_label']}", shown))
        for row in summary["rejected"][:10]:
            who = f"agent {row['agent']}" if row["agent"] is not None else "plan"
            kept = "; saved as fallback" if row["fallback"] else ""
            console.print(f"rejected (seed {row['scenario_seed']}, variant {row['variant']}"
                          f"{kept}) {who}: {row['reason']}", highlight=False, markup=False,
                          soft_wrap=True)
        note = f" ({len(fallback)} fallback: no plan passed)" if fallback else ""
        console.print(f"saved {len(summary['saved'])} batches under {out}{note}",
                      highlight=False, markup=False, soft_wrap=True)
    if not accepted and not (no_filter and summary["saved"]):
        kept = (f"; {len(fallback)} fallback batch(es) with the lowest bound (not accepted, "
                f"marked extra.fallback) are saved under {out}" if fallback else "")
        print_error(f"the critic accepted no plan (see 'rejected'){kept}; raise --max-rounds "
                    "or --epsilon, spread departures, or use --no-filter")
        raise typer.Exit(1)


async def _ask(request: PlanRequest, question: str, learners):
    """One turn of a chat session: the team plans (its critic judging under ``learners``),
    then the answering agent answers ``question``; ``(answer, session)``."""
    from relied.agents.chat import ChatSession

    session = await ChatSession.start(request, learners)
    return await session.answer(question), session


@experts_app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="e.g. 'why did agent 3 take this route?'")],
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline", epsilon: Epsilon = DEFAULT_EPSILON,
    max_rounds: Rounds = 3, run: Run = None, ollama: Host = None, timeout: Timeout = 120.0,
    sim_vehicles: SimVehicles = DEFAULT_SIM_VEHICLES, bound_version: BoundVersion = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask the expert team one question about a scenario; prints the answer.

    The critic judges the plan as 'experts generate' does, with --bound-version (default: the
    version the run of --run trains with, else 6): under the learners of --run, else the
    seeded untrained learners a new training run starts from; --json's bound_version is the
    version used.
    Above the team's sim_vehicles the plan is executed and judged on the team's fleet sample
    (scaled capacities), and the answer (and --json's fleet_sample) says so.
    """
    if not question.strip():
        fail("the question is empty; e.g. relied experts ask 'why did agent 3 take this "
             "route?'", as_json)
    try:
        sc = _scenario(scenario, city, agents, seed)
        learners = _learners(sc, run)
        request = PlanRequest(scenario=sc, model=resolve_spec(model, ollama),
                              config=_config(epsilon, max_rounds,
                                             sim_vehicles=sim_vehicles,
                                             bound_version=_bound_version(bound_version, run)),
                              ollama_host=ollama, timeout_s=timeout)
        answer, session = asyncio.run(_ask(request, question, learners))
    except (*USER_ERRORS, ValidationError) as exc:
        fail(_message(exc), as_json)
    outcome = session.outcome
    if as_json:
        emit_json({"question": question, "answer": answer, "model": request.model,
                   "accepted": outcome.verdict.accepted, "rounds": outcome.rounds,
                   "reason": outcome.verdict.reason,
                   "bound_version": learners.bound_version(request.config.bound),
                   "learners": learners.source,
                   "fleet_sample": session.state.facts.sample_note.get("fleet_sample"),
                   "usage": usage_totals([*outcome.usage, *session.usage])})
        return
    console.print(answer, highlight=False, markup=False)


CHAT_HELP = ("Ask about the plan (e.g. 'why agent 3?', 'and its bound?', 'the slowest agents'), "
             "'verdict', 'replan' for a new plan variant, '/model NAME' to switch model, "
             "'quit' to leave; Ctrl-C cancels an answer.")


def _stdin_usable() -> bool:
    """False when stdin is closed (``0<&-`` leaves Python with ``sys.stdin = None``)."""
    return sys.stdin is not None and not sys.stdin.closed


@experts_app.command()
def chat(
    city: City = "aguascalientes", agents: Agents = 20, seed: Seed = 0,
    scenario: ScenarioOpt = None, model: Model = "offline", epsilon: Epsilon = DEFAULT_EPSILON,
    max_rounds: Rounds = 3, run: Run = None, ollama: Host = None, timeout: Timeout = 120.0,
    sim_vehicles: SimVehicles = DEFAULT_SIM_VEHICLES, bound_version: BoundVersion = None,
) -> None:
    """Talk with the expert team about a scenario (a REPL that keeps the conversation).

    The critic judges every plan of the chat (and 'agent_bound' reports its terms) as
    'experts generate' does, with --bound-version (default: the version the run of --run
    trains with, else 6): under the learners of --run, else the seeded untrained learners a
    new training run starts from.
    Above the team's sim_vehicles plans are executed and judged on the team's fleet sample
    (scaled capacities), as said.
    """
    from relied.agents.chat import ChatSession

    if not _stdin_usable():
        fail("experts chat needs a readable stdin (it is closed); use 'relied experts ask "
             "QUESTION' for one question")
    try:
        sc = _scenario(scenario, city, agents, seed)
        learners = _learners(sc, run)
        request = PlanRequest(scenario=sc, model=resolve_spec(model, ollama),
                              config=_config(epsilon, max_rounds,
                                             sim_vehicles=sim_vehicles,
                                             bound_version=_bound_version(bound_version, run)),
                              ollama_host=ollama, timeout_s=timeout)
        session = asyncio.run(ChatSession.start(request, learners))
    except (*USER_ERRORS, ValidationError) as exc:
        fail(_message(exc))
    learners, sample = session.learners, session.sample
    simulated = (f"; plans are simulated on a seeded fleet sample of "
                 f"{sample.scenario.n_vehicles:,} of {sc.n_vehicles:,} vehicles (capacities x"
                 f"{sample.info.factor:.3g})" if sample else "")
    console.print(f"expert team ({describe(session.spec)}) planned {sc.n_agents} agents in "
                  f"{session.outcome.rounds} round(s); the critic judges with bound version "
                  f"{learners.bound_version(session.request.config.bound)} under "
                  f"{learners.source}{simulated}. {CHAT_HELP}",
                  highlight=False, markup=False, soft_wrap=True)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        except KeyboardInterrupt:
            console.print()
            continue
        except (OSError, RuntimeError) as exc:  # stdin went away
            fail(f"stdin is no longer readable ({type(exc).__name__}); the chat ended")
        if line in ("quit", "exit", "q", "/quit"):
            break
        if line:
            _turn(session, line)


def _turn(session, line: str) -> None:
    """One REPL input: a command or a question (streamed); errors and Ctrl-C keep the REPL."""
    try:
        if line == "verdict":
            v = session.outcome.verdict
            console.print(f"{'accepted' if v.accepted else 'rejected'} in round {v.round}: "
                          f"{v.reason}", highlight=False, markup=False)
        elif line.startswith("/model"):
            name = line.removeprefix("/model").strip()
            if not name:
                raise ValueError("/model needs a name, e.g. '/model qwen2.5:7b' or "
                                 "'/model offline'")
            host = session.request.ollama_host
            spec = resolve_spec(name if name in ("offline", "auto") or name.startswith("ollama:")
                                else f"ollama:{name}", host)
            chat_card(spec, host)
            session.swap_model(spec)
            console.print(f"now answering with {describe(spec)}", highlight=False,
                          markup=False)
        elif line.startswith("replan"):
            outcome = asyncio.run(session.replan())
            v = outcome.verdict
            console.print(f"new plan (variant {session.variant}): "
                          f"{'accepted' if v.accepted else 'rejected'} after {outcome.rounds}"
                          f" round(s): {v.reason}", highlight=False, markup=False)
        else:
            asyncio.run(_stream_answer(session, line))
    except KeyboardInterrupt:
        console.print("\n(answer cancelled)", highlight=False, markup=False)
    except (*USER_ERRORS, ValidationError) as exc:
        print_error(_message(exc))


async def _stream_answer(session, question: str) -> None:
    console.print("team> ", end="", highlight=False, markup=False)
    async for chunk in session.ask(question):
        console.print(chunk, end="", highlight=False, markup=False, soft_wrap=True)
        console.file.flush()
    console.print()


def models(ollama: Host = None, as_json: JsonFlag = False) -> None:
    """List the models Ollama serves (capabilities, context, digest), or say that the offline
    planner will be used."""
    host = ollama_host(ollama)
    try:
        names = list_ollama_models(ollama)
        reachable, note = True, ""
    except ModelError as exc:
        names, reachable, note = [], False, error_message(exc)
    details: dict[str, dict | None] = {}
    for name in names:
        try:
            details[name] = ollama_model_details(name, ollama)
        except ModelError:
            details[name] = None
    if as_json:
        emit_json({"host": host, "reachable": reachable, "models": names,
                   "details": details, "fallback": "offline", "note": note})
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
        caps = ",".join(d.get("capabilities") or []) or "?"
        info = ", ".join(str(d[k]) for k in ("family", "parameter_size", "quantization")
                         if d.get(k))
        ctx = f"context {d['context_length']:,}" if d.get("context_length") else "context ?"
        console.print(f"ollama:{name}  {info}  [{caps}]  {ctx}", highlight=False, markup=False)
