"""``relied train``, ``relied eval`` and ``relied compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from relied.commands.output import JsonFlag, console, fail, metric_table
from relied.env.cities import CityError
from relied.experts.demos import DemoFileError
from relied.rl.config import ALGOS, TrainConfig


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"invalid config: {'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _errors():
    from relied.rl.demos import DemoError
    from relied.rl.envs import VectorEnvError
    from relied.rl.policy import PolicyFileError
    from relied.rl.trainer import TrainError

    return (CityError, DemoError, DemoFileError, TrainError, VectorEnvError, PolicyFileError,
            ValueError, OSError)


def train(
    config: Annotated[Path | None, typer.Option(help="TrainConfig JSON; options below override")]
    = None,
    city: Annotated[str | None, typer.Option(help="shipped city or .osm path")] = None,
    agents: Annotated[int | None, typer.Option(min=1, help="number of vehicle agents")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of scenario, init and sampling")] = None,
    train_seeds: Annotated[int | None, typer.Option(
        min=1, help="cycle over this many OD scenarios (seed, seed+1, ...)")] = None,
    algo: Annotated[str | None, typer.Option(help=f"one of {', '.join(ALGOS)}")] = None,
    experts: Annotated[str | None, typer.Option(
        help="expert-team model spec (e.g. offline) or shortest-path")] = None,
    demos: Annotated[Path | None, typer.Option(help="use this demo store")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="budget in simulator steps")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate")] = None,
    share: Annotated[str | None, typer.Option(help="none | group | all")] = None,
    groups: Annotated[int | None, typer.Option(min=1, help="groups for --share group")] = None,
    envs: Annotated[int | None, typer.Option(min=1, help="parallel env copies")] = None,
    vector: Annotated[str | None, typer.Option(help="dummy | subproc | ray")] = None,
    expert_loss: Annotated[str | None, typer.Option(help="bc | ppo")] = None,
    weight: Annotated[str | None, typer.Option(help="lambda mapping: dtw | return | fixed")]
    = None,
    bound_every: Annotated[int | None, typer.Option(
        min=0, help="re-check the demos' stationarity bound every N iterations")] = None,
    regen_every: Annotated[int | None, typer.Option(
        min=0, help="re-generate demos every K iterations with the learners' behaviour")] = None,
    runs_dir: Annotated[Path, typer.Option(help="root of run folders")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(
        help="continue this run folder from its last checkpoint (other options ignored)")]
    = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Train agents (reled, leed, ippo, bc, mappo) and write a run folder."""
    from relied.rl.trainer import Trainer

    overrides = {"city": city, "n_agents": agents, "seed": seed, "train_seeds": train_seeds,
                 "algo": algo,
                 "experts": experts, "demos_dir": str(demos) if demos else None,
                 "total_steps": steps, "lr": lr, "share": share, "n_groups": groups,
                 "n_envs": envs, "vector": vector, "expert_loss": expert_loss, "weight": weight,
                 "bound_every": bound_every, "regen_every": regen_every}
    try:
        if resume is not None:
            trainer = Trainer.resume(resume, progress=progress)
        else:
            base = json.loads(config.read_text()) if config else {}
            base.update({k: v for k, v in overrides.items() if v is not None})
            trainer = Trainer.create(TrainConfig.model_validate(base), runs_dir,
                                     progress=progress)
        summary = trainer.run()
    except _errors() as exc:
        fail(_message(exc))
    if as_json:
        print(json.dumps(summary))
        return
    console.print(metric_table(f"trained {summary['algo']} on {summary['city']}", summary))


def evaluate(
    run: Annotated[Path, typer.Argument(
        help="run folder, or a folder above runs (its newest finished run is used)")],
    seeds: Annotated[str | None, typer.Option(
        help="comma-separated held-out scenario seeds (default: run seed + 1000..1002)")] = None,
    city: Annotated[str | None, typer.Option(help="evaluate on another city")] = None,
    agents: Annotated[int | None, typer.Option(min=1, help="number of agents")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a trained run on held-out scenarios against the reference policies."""
    from relied.rl.evaluate import evaluate_run, load_run

    try:
        if seeds:
            seed_list = [int(s) for s in seeds.split(",")]
        else:
            base = load_run(run)[0].seed + 1000
            seed_list = [base, base + 1, base + 2]
        result = evaluate_run(run, seed_list, city=city, n_agents=agents)
    except _errors() as exc:
        fail(_message(exc))
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{result['algo']} (trained on {result['trained_city']}) on "
                        f"{result['city']}, {result['agents']} agents, seeds {result['seeds']}")
    table.add_column("policy")
    heads = {"mean_return": "return", "mean_travel_time": "mean tt (s)",
             "p95_travel_time": "p95 tt (s)", "arrival_rate": "arrival"}
    for head in heads.values():
        table.add_column(head, justify="right")
    for name, values in result["policies"].items():
        table.add_row(name, *(f"{values[m]:,.2f}" for m in heads))
    console.print(table)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders (or folders holding runs)")],
    out: Annotated[Path, typer.Option(help="PNG of the learning curves")] = Path("compare.png"),
    as_json: JsonFlag = False,
) -> None:
    """Learning curves of several runs in one PNG and a table of sample efficiency."""
    from relied.rl.evaluate import compare_runs

    try:
        result = compare_runs(runs, out)
    except _errors() as exc:
        fail(_message(exc))
    if as_json:
        print(json.dumps(result))
        return
    target = result["ippo_final_return"]
    table = Table(title=f"IPPO final return {target if target is None else round(target, 2)}; "
                        f"curves: {out}")
    cols = {"algo": "algo", "runs": "runs", "final_return": "final return",
            "steps_to_ippo_final": "steps to IPPO final", "reached_ippo_final": "runs reaching",
            "greedy_travel_time": "greedy tt (s)", "greedy_arrival_rate": "arrival",
            "wall_s": "wall (s)"}
    for title in cols.values():
        table.add_column(title, justify="right")
    for row in result["algos"]:
        table.add_row(*(f"{row[c]:,.2f}" if isinstance(row[c], float) else str(row[c])
                        for c in cols))
    console.print(table)
