"""The ``relied`` command line."""

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
    validation_message,
)
from relied.env.cities import SHIPPED_CITIES, CityError, load_city
from relied.env.policies import POLICIES, make_policy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario

app = typer.Typer(help="Multi-agent RL on real city road networks with expert demonstrations.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
@app.command()
def cities(as_json: JsonFlag = False) -> None:
    """List the shipped cities with node and edge counts of their drivable networks."""
    rows = []
    for name, city in SHIPPED_CITIES.items():
        net = load_city(name)
        rows.append({"name": name, "nodes": net.n_nodes, "edges": net.n_edges,
                     "description": city.description})
    if as_json:
        print(json.dumps({"cities": rows}))
        return
    table = Table(title="Shipped cities (c) OpenStreetMap contributors, ODbL")
    for col in ("name", "nodes", "edges", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["nodes"]), str(r["edges"]), r["description"])
    console.print(table)


SCENARIO_FLAGS = {"n_agents": "--agents", "seed": "--seed", "horizon_s": "--horizon",
                  "departure_window_s": "--departure-window", "dt_s": "--dt",
                  "background_share": "--background-share", "traffic_model": "--traffic-model",
                  "city": "--city", "signals": "--signals"}


def build_scenario(preset: str | None, scenario: Path | None, overrides: dict) -> Scenario:
    """The scenario of a run: a preset or a Scenario JSON file (or the defaults), with the
    flags the user gave (``None`` = not given) on top; re-validated as a whole."""
    from relied.env.presets import load_preset

    if preset and scenario:
        raise ValueError("give --preset or --scenario, not both")
    base = (load_preset(preset).scenario if preset else
            Scenario.load(scenario) if scenario else Scenario())
    given = {k: v for k, v in overrides.items() if v is not None}
    return Scenario.model_validate(base.model_dump() | given)


@app.command()
def simulate(
    preset: Annotated[str | None, typer.Option(help="named benchmark scenario, e.g. "
                                               "aguascalientes-peak")] = None,
    city: Annotated[str | None, typer.Option(
        help="shipped name, .osm/.graphml path, or place:<query>")] = None,
    agents: Annotated[int | None, typer.Option(help="learning vehicles [20]")] = None,
    policy: Annotated[str, typer.Option(help=f"one of {', '.join(POLICIES)}")] = "shortest-path",
    seed: Annotated[int | None, typer.Option(help="seed of trips and policy [0]")] = None,
    horizon: Annotated[float | None, typer.Option(help="episode horizon, s [1800]")] = None,
    departure_window: Annotated[float | None, typer.Option(
        help="departures spread over this many seconds [0]")] = None,
    background_share: Annotated[float | None, typer.Option(
        help="share of all vehicles that are background traffic, [0, 1)")] = None,
    traffic_model: Annotated[str | None, typer.Option(help="queue (default) or bpr")] = None,
    dt: Annotated[float | None, typer.Option(help="simulation step, s [1]")] = None,
    signals: Annotated[bool | None, typer.Option(
        "--signals/--no-signals", help="core: fixed-time traffic signals at OSM-signalised "
        "junctions (90 s cycle) [off]")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario JSON file")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of routes coloured by slowdown")] = None,
    plot_queues: Annotated[Path | None, typer.Option(
        help="PNG of queues on the map over time")] = None,
    backend: Annotated[str, typer.Option(
        help="core (fast built-in), sumo (SUMO micro) or sumo-meso (SUMO mesoscopic); "
             "SUMO needs pip install 'relied[sumo]'")] = "core",
    sumo_signals: Annotated[str, typer.Option(
        help="SUMO's traffic lights with --signals: netconvert (netconvert's programs) or "
             "core (the core's fixed-time plans)")] = "netconvert",
    meso_junctions: Annotated[str | None, typer.Option(
        help="with --backend sumo-meso: control (SUMO's junction control) or green-split "
             "(the core's junction model: no junction control, signalised links slowed by "
             "their green share; docs/sumo.md) [control]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one episode with a reference policy and print the learners' metrics."""
    from pydantic import ValidationError

    from relied.env.sumo import SumoError, check_backend, check_meso_junctions, make_core

    try:
        sc = build_scenario(preset, scenario, {
            "city": city, "n_agents": agents, "seed": seed, "horizon_s": horizon,
            "departure_window_s": departure_window, "background_share": background_share,
            "traffic_model": traffic_model, "dt_s": dt, "signals": signals})
        plot = figure_path(plot, "--plot", "routes.png") if plot else None
        plot_queues = (figure_path(plot_queues, "--plot-queues", "queues.png")
                       if plot_queues else None)
        check_backend(backend)
        if backend != "core" and plot_queues is not None:
            raise ValueError("--plot-queues needs --backend core (queues are the core's)")
        net = load_city(sc.city)
        kw = {"record_queues": True} if plot_queues is not None else {}
        if sumo_signals not in ("core", "netconvert"):
            raise ValueError(f"unknown --sumo-signals '{sumo_signals}'; choose core or "
                             "netconvert")
        junctions = check_meso_junctions(meso_junctions, backend)
        core = make_core(net, sc, backend, record_routes=plot is not None,
                         signal_plans=sumo_signals, meso_junctions=junctions, **kw)
        pol = make_policy(policy, sc.seed)
        episode = run_episode(core, pol)
    except ValidationError as exc:
        fail(validation_message(exc, SCENARIO_FLAGS), as_json)
    except (CityError, ValueError, OSError, SumoError) as exc:
        fail(error_message(exc), as_json)
    result = {"city": sc.city, "preset": preset, "agents": sc.n_agents,
              "vehicles": sc.n_vehicles, "traffic_model": sc.traffic_model, "policy": policy,
              "seed": sc.seed, "backend": backend, "signals": sc.signals, "steps": episode.steps,
              "wall_s": episode.wall_s, **episode.metrics}
    report = getattr(core, "program_report", None)
    if backend != "core":
        result["sumo_signals"] = sumo_signals if sc.signals else "netconvert"
        if report is not None:
            result["core_plans_in_sumo"] = report.summary()
    if backend == "sumo-meso":
        result["meso_junctions"] = junctions
    equilibrium = getattr(pol, "equilibrium", None)
    if equilibrium is not None:
        result["relative_gap"] = equilibrium.relative_gap[-1]
        result["equilibrium_iterations"] = equilibrium.iterations
    label = f"{sc.city}: {policy}, {sc.n_agents} learners of {sc.n_vehicles} vehicles"
    if backend != "core":
        label += f" ({backend})"
    if plot is not None:
        from relied.env.plot import plot_routes

        result["plot"] = str(plot_routes(core, episode.routes, plot, title=label))
    if plot_queues is not None:
        from relied.env.plot import plot_queues as draw_queues

        result["plot_queues"] = str(draw_queues(core, plot_queues, title=label))
    if as_json:
        emit_json(result)
        return
    console.print(metric_table(f"{label}, seed {sc.seed}", result))


@app.command()
def presets(as_json: JsonFlag = False) -> None:
    """List the shipped benchmark scenarios."""
    from relied.env.presets import load_preset, preset_names

    rows = []
    for name in preset_names():
        p = load_preset(name)
        rows.append({"name": name, "city": p.scenario.city, "learners": p.scenario.n_agents,
                     "vehicles": p.scenario.n_vehicles, "description": p.description})
    if as_json:
        emit_json({"presets": rows})
        return
    table = Table(title="Benchmark presets")
    for col in ("name", "city", "learners", "vehicles", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("name", "city", "learners", "vehicles",
                                              "description")))
    console.print(table)


# --- verbs of the higher layers: one registration line each, below this marker ---
from relied.commands.training import compare, evaluate, train  # noqa: E402

app.command()(train)
app.command(name="eval")(evaluate)
app.command()(compare)
from relied.commands.experts import experts_app, models  # noqa: E402

app.add_typer(experts_app, name="experts")
app.command()(models)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
