"""The ``relied`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from relied.commands.output import JsonFlag, console, fail, metric_table
from relied.env.cities import SHIPPED_CITIES, CityError, load_city
from relied.env.core import RoutingCore
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


@app.command()
def simulate(
    city: Annotated[str, typer.Option(help="shipped name, .osm/.graphml path, or place:<query>")]
    = "aguascalientes",
    agents: Annotated[int, typer.Option(min=1, help="number of vehicle agents")] = 20,
    policy: Annotated[str, typer.Option(help=f"one of {', '.join(POLICIES)}")] = "shortest-path",
    seed: Annotated[int, typer.Option(help="seed of OD sampling and the policy")] = 0,
    horizon: Annotated[float, typer.Option(help="episode horizon in seconds")] = 1800.0,
    departure_window: Annotated[float, typer.Option(help="stagger departures over s")] = 0.0,
    scenario: Annotated[Path | None, typer.Option(help="Scenario JSON (overrides the above)")]
    = None,
    plot: Annotated[Path | None, typer.Option(help="draw routes coloured by congestion")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one episode with a reference policy and print its metrics."""
    try:
        sc = (Scenario.load(scenario) if scenario else
              Scenario(city=city, n_agents=agents, seed=seed, horizon_s=horizon,
                       departure_window_s=departure_window))
        net = load_city(sc.city)
        core = RoutingCore(net, sc, record_routes=plot is not None)
        pol = make_policy(policy, seed)
    except (CityError, ValueError, OSError) as exc:
        fail(str(exc).splitlines()[0])
    episode = run_episode(core, pol)
    result = {"city": sc.city, "agents": sc.n_agents, "policy": policy, "seed": sc.seed,
              "steps": episode.steps, **episode.metrics}
    if plot is not None:
        from relied.env.plot import plot_routes

        plot_routes(core, episode.routes, plot, title=f"{sc.city}: {policy}, {sc.n_agents} agents")
        result["plot"] = str(plot)
    if as_json:
        print(json.dumps(result))
        return
    console.print(metric_table(
        f"{sc.city}, {sc.n_agents} agents, policy {policy}, seed {sc.seed}", result))


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
