"""``relied train``, ``relied eval`` and ``relied compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from relied.commands.output import (
    JsonFlag,
    console,
    emit_json,
    error_message,
    fail,
    figure_path,
    metric_table,
)
from relied.env.cities import CityError
from relied.experts.demos import DemoFileError
from relied.rl.config import ALGOS, TrainConfig

#: TrainConfig fields and the ``train`` flags that set them, for error messages.
TRAIN_FLAGS = {"preset": "--preset", "city": "--city", "n_agents": "--agents", "seed": "--seed",
               "train_seeds": "--train-seeds", "demo_scenarios": "--demo-scenarios",
               "algo": "--algo", "experts": "--experts",
               "demos_dir": "--demos", "total_steps": "--steps", "lr": "--lr", "share": "--share",
               "n_groups": "--groups", "n_envs": "--envs", "vector": "--vector",
               "engine": "--engine", "device": "--device",
               "expert_loss": "--expert-loss", "weight": "--weight",
               "bound_every": "--bound-every", "regen_every": "--regen-every",
               "ollama_host": "--ollama-host", "timeout_s": "--timeout", "epsilon": "--epsilon",
               "demo_agents": "--demo-agents", "sim_vehicles": "--sim-vehicles",
               "bound_version": "--bound-version"}


def _errors():
    from relied.agents.clients import ModelError
    from relied.rl.demos import DemoError
    from relied.rl.envs import VectorEnvError
    from relied.rl.model import DeviceError
    from relied.rl.policy import PolicyFileError
    from relied.rl.run_folder import TrainError

    return (CityError, DemoError, DemoFileError, DeviceError, TrainError, VectorEnvError,
            PolicyFileError, ModelError, ValueError, OSError)


def _config_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"--config '{path}' cannot be read ({type(exc).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(f"--config '{path}' is not valid JSON{where}; fix the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config '{path}' must hold a JSON object of TrainConfig fields")
    return data


def parse_seeds(text: str) -> list[int]:
    """``--seeds 1000,1001`` as integers; ``ValueError`` naming the flag otherwise."""
    seeds = []
    for item in text.split(","):
        try:
            seed = int(item.strip())
        except ValueError:
            raise ValueError(f"--seeds: '{item.strip()}' is not an integer; give "
                             "comma-separated seeds >= 0, e.g. --seeds 1000,1001") from None
        if not 0 <= seed < 2**32:
            raise ValueError(f"--seeds: {seed} is out of range (0 <= seed < 2**32)")
        seeds.append(seed)
    return seeds


def train(
    config: Annotated[Path | None, typer.Option(help="TrainConfig JSON; options below override")]
    = None,
    city: Annotated[str | None, typer.Option(help="shipped city or .osm path")] = None,
    agents: Annotated[int | None, typer.Option(min=1, help="number of vehicle agents")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of scenario, init and sampling")] = None,
    preset: Annotated[str | None, typer.Option(
        help="benchmark scenario (relied presets), e.g. aguascalientes-peak")] = None,
    train_seeds: Annotated[int | None, typer.Option(
        min=1, help="train on this many fixed scenarios (seed, seed+1, ...) instead of fresh "
        "trips every iteration")] = None,
    demo_scenarios: Annotated[int | None, typer.Option(
        min=1, help="with fresh trips: scenarios the experts demonstrate [4]")] = None,
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
    backend: Annotated[str | None, typer.Option(
        help="core | sumo | sumo-meso: simulator of the training envs (SUMO is slow)")] = None,
    engine: Annotated[str | None, typer.Option(
        help="fast (default) | tianshou: Tianshou's collector/trainer (tianshou:* algos)")]
    = None,
    device: Annotated[str | None, typer.Option(
        help="auto | cpu | cuda: torch device of policy, buffers and update [auto: CUDA when "
        "available]; with --resume it overrides the run's")] = None,
    expert_loss: Annotated[str | None, typer.Option(help="bc | ppo")] = None,
    weight: Annotated[str | None, typer.Option(help="lambda mapping: dtw | return | fixed")]
    = None,
    bound_every: Annotated[int | None, typer.Option(
        min=0, help="re-check the demos' stationarity bound every N iterations")] = None,
    regen_every: Annotated[int | None, typer.Option(
        min=0, help="re-generate demos every K iterations with the learners' behaviour")] = None,
    ollama_host: Annotated[str | None, typer.Option(
        "--ollama-host", help="Ollama URL for --experts ollama:<model> ($OLLAMA_HOST)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per expert model call")] = None,
    epsilon: Annotated[float | None, typer.Option(
        help="the critic's largest accepted stationarity bound per agent")] = None,
    demo_agents: Annotated[int | None, typer.Option(
        min=0, help="most learners the expert team plans and demonstrates per scenario (a "
        "seeded sample from every planner block above it; 0: all) [500]")] = None,
    bound_version: Annotated[int | None, typer.Option(
        min=5, max=6, help="the critic's bound: 6, the measured lookahead of the learners' "
        "whole next update; 5, the analytic bound with their trial update (docs/experts.md) "
        "[6]")] = None,
    sim_vehicles: Annotated[int | None, typer.Option(
        min=0, help="most vehicles the expert team simulates: a larger fleet is simulated as a "
        "seeded sample of about this many on the network with capacities scaled by its share "
        "(0: never sample) [15000]")] = None,
    runs_dir: Annotated[Path, typer.Option(help="root of run folders")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(
        help="continue this run folder from its last checkpoint (other options ignored)")]
    = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Train agents (reled, leed, ippo, bc, mappo) and write a run folder."""
    from relied.rl.trainer import Trainer

    overrides = {"preset": preset, "city": city, "n_agents": agents, "seed": seed,
                 "train_seeds": train_seeds, "demo_scenarios": demo_scenarios,
                 "algo": algo,
                 "experts": experts, "demos_dir": str(demos) if demos else None,
                 "total_steps": steps, "lr": lr, "share": share, "n_groups": groups,
                 "n_envs": envs, "vector": vector, "backend": backend, "engine": engine,
                 "device": device,
                 "expert_loss": expert_loss,
                 "weight": weight,
                 "bound_every": bound_every, "regen_every": regen_every,
                 "ollama_host": ollama_host, "timeout_s": timeout, "epsilon": epsilon,
                 "demo_agents": demo_agents, "sim_vehicles": sim_vehicles,
                 "bound_version": bound_version}
    try:
        if resume is not None:
            if device is not None:
                from relied.rl.model import resolve_device

                resolve_device(device)  # a bad --device fails before the run is touched
            from relied.rl.tianshou_engine import resume as resume_run

            trainer = resume_run(resume, progress=progress, device=device)
        else:
            base = _config_file(config) if config else {}
            base.update({k: v for k, v in overrides.items() if v is not None})
            if demo_agents == 0:
                base["demo_agents"] = None  # every learner
            if sim_vehicles == 0:
                base["sim_vehicles"] = None  # never sample the fleet
            cfg = TrainConfig.model_validate(base)
            from relied.rl.model import resolve_device

            resolve_device(cfg.device)  # cuda without CUDA: one line, exit 2
            if cfg.engine == "tianshou" or cfg.algo.startswith("tianshou:"):
                from relied.rl.tianshou_engine import TianshouRun

                trainer = TianshouRun.create(cfg, runs_dir, progress=progress)
            else:
                trainer = Trainer.create(cfg, runs_dir, progress=progress)
        summary = trainer.run()
    except _errors() as exc:
        fail(error_message(exc, TRAIN_FLAGS), as_json)
    if as_json:
        emit_json(summary)
        return
    console.print(metric_table(f"trained {summary['algo']} on {summary['city']}", summary))


def evaluate(
    run: Annotated[Path, typer.Argument(
        help="run folder, or a folder above runs (its newest finished run is used)")],
    seeds: Annotated[str | None, typer.Option(
        help="comma-separated held-out scenario seeds (default: run seed + 1000..1002)")] = None,
    city: Annotated[str | None, typer.Option(help="evaluate on another city")] = None,
    agents: Annotated[int | None, typer.Option(min=1, help="number of agents")] = None,
    backend: Annotated[str, typer.Option(
        help="core, sumo (SUMO micro) or sumo-meso: in SUMO the report also compares the "
             "ranking and the gain over shortest-path with the core")] = "core",
    device: Annotated[str, typer.Option(
        help="auto | cpu | cuda: torch device of the policy [auto: CUDA when available]")]
    = "auto",
    meso_junctions: Annotated[str | None, typer.Option(
        help="with --backend sumo-meso: control (SUMO's junction control) or green-split "
             "(the core's junction model; docs/sumo.md) [control]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a trained run on held-out scenarios against the reference policies."""
    from relied.env.sumo import SumoError, check_meso_junctions
    from relied.rl.evaluate import evaluate_run, load_run

    try:
        from relied.rl.model import resolve_device

        junctions = check_meso_junctions(meso_junctions, backend)
        torch_device = resolve_device(device)
        if seeds:
            seed_list = parse_seeds(seeds)
        else:
            base = load_run(run)[0].seed + 1000
            seed_list = [base, base + 1, base + 2]
        result = evaluate_run(run, seed_list, city=city, n_agents=agents, backend=backend,
                              device=torch_device, meso_junctions=junctions)
    except (*_errors(), SumoError) as exc:
        fail(error_message(exc, {"n_agents": "--agents", "city": "--city", "seed": "--seeds"}),
             as_json)
    if as_json:
        emit_json(result)
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
    if backend != "core":
        table.title += f", backend {backend}"
        if backend == "sumo-meso":
            table.title += f" ({junctions} junctions)"
    console.print(table)
    learner, eq = result["policies"][result["algo"]], result["policies"].get("equilibrium", {})
    if "relative_gap" in eq and "vs_equilibrium" in learner:
        console.print(f"{result['algo']} vs the dynamic user equilibrium: "
                      f"{learner['vs_equilibrium']:+.1%} mean travel time (equilibrium's "
                      f"relative gap {eq['relative_gap']:.1%})")
    cmp = result.get("comparison")
    if cmp:
        carry = cmp["gain_carry_over"]
        console.print(f"ranking in {backend}: {' < '.join(cmp['ranking_backend'])}; core: "
                      f"{' < '.join(cmp['ranking_core'])} "
                      f"({'preserved' if cmp['ranking_preserved'] else 'NOT preserved'})")
        console.print(f"gain over shortest-path: core {cmp['gain_core']:+.1%}, {backend} "
                      f"{cmp['gain_backend']:+.1%}, carry-over "
                      f"{'n/a' if carry is None else f'{carry:.2f}'}")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders (or folders holding runs)")],
    out: Annotated[Path, typer.Option(
        help="figure of the learning curves (.png, .pdf, .svg; a folder gets compare.png)")]
    = Path("compare.png"),
    unfinished: Annotated[bool, typer.Option(
        "--include-unfinished", help="also pool runs that have not finished (marked)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Learning curves of several runs of one city in one figure and a table of sample
    efficiency; unfinished runs are listed apart unless --include-unfinished."""
    from relied.rl.evaluate import compare_runs

    try:
        out = figure_path(out, "--out", "compare.png")
        result = compare_runs(runs, out, include_unfinished=unfinished)
    except _errors() as exc:
        fail(error_message(exc), as_json)
    if as_json:
        emit_json(result)
        return
    target = result["ippo_final_return"]
    table = Table(title=f"{result['city']}: IPPO final return "
                        f"{target if target is None else round(target, 2)}; curves: {out}")
    cols = {"algo": "algo", "runs": "runs", "unfinished": "unfinished",
            "final_return": "final return",
            "steps_to_ippo_final": "steps to IPPO final", "reached_ippo_final": "runs reaching",
            "greedy_travel_time": "greedy tt (s)", "greedy_arrival_rate": "arrival",
            "wall_s": "wall (s)"}
    for title in cols.values():
        table.add_column(title, justify="right")
    for row in result["algos"]:
        table.add_row(*(f"{row[c]:,.2f}" if isinstance(row[c], float) else
                        "n/a" if row[c] is None else str(row[c]) for c in cols))
    console.print(table)
    for run in result["unfinished"]:
        state = "pooled" if unfinished else "left out (--include-unfinished to pool it)"
        console.print(f"unfinished run {run['run_dir']} at {run['env_steps']:.0f} of "
                      f"{run['total_steps']} env steps: {state}")
