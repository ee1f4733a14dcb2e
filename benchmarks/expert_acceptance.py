"""Acceptance of expert plans by the stationarity critic, and their executed travel times.

For each number of agents and each seed (an OD sample of aguascalientes): run the expert team
(offline planner by default, no cache), record the round of acceptance and model calls, execute
the accepted plan, and compare its mean travel time with free-flow shortest path and random
routing in the same simulator. Also: how often no plan passed (the team's best-bound fallback)
and the final plan's bound quantile as a ratio of the reference's (the free-flow shortest-path
plan, since no learner behaviour is given; the naive shortest-path plan is therefore accepted by
construction and not measured). Writes ``benchmarks/results/expert_acceptance.{md,json}``.

    python benchmarks/expert_acceptance.py [--rows 20 100 300 300@300] [--seeds 20]
        [--model offline] [--epsilon 1.0]     (``300@300``: 300 agents departing over 300 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np

from relied.agents.generate import plan_scenario
from relied.agents.team import TeamConfig
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import RandomPolicy, ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import execute

RESULTS = Path(__file__).parent / "results"


def measure(city: str, n: int, window: float, seeds: int, model: str, config: TeamConfig) -> dict:
    net = load_city(city)
    rows = []
    for seed in range(seeds):
        sc = Scenario(city=city, n_agents=n, seed=seed, departure_window_s=window).resolve(net)
        out, _, _ = asyncio.run(plan_scenario(sc, model, config=config, use_cache=False))
        bounds = list(out.verdict.bounds.values())
        ratio = (float(np.quantile(bounds, config.bound.quantile)) / out.reference_bound
                 if bounds and out.reference_bound else None)
        plan_tt = float("nan")
        if out.verdict.accepted:
            routes = [index_of(net, r).tolist() for r in out.routes]
            plan_tt = execute(net, sc, routes=routes).metrics["mean_travel_time"]
        core = RoutingCore(net, sc, record_routes=True)
        sp = run_episode(core, ShortestPathPolicy())
        rnd = run_episode(RoutingCore(net, sc), RandomPolicy(seed)).metrics["mean_travel_time"]
        rows.append({"seed": seed, "round": out.accepted_round, "fallback": out.fallback,
                     "bound_ratio": ratio, "calls": out.model_calls, "plan_tt": plan_tt,
                     "sp_tt": sp.metrics["mean_travel_time"], "random_tt": rnd})
    accepted = [r for r in rows if r["round"] is not None]
    ratios = [r["bound_ratio"] for r in rows if r["bound_ratio"] is not None]
    return {
        "agents": n, "departure_window_s": window, "plans": len(rows),
        "accepted_first_round": sum(r["round"] == 1 for r in rows) / len(rows),
        "accepted_within_two_rounds": sum(r["round"] in (1, 2) for r in rows) / len(rows),
        "accepted_within_limit": len(accepted) / len(rows),
        "fallback": sum(r["fallback"] for r in rows) / len(rows),
        "median_bound_ratio": (float(np.median(ratios)) if ratios else None),
        "model_calls_per_accepted_plan": (sum(r["calls"] for r in rows) / len(accepted)
                                          if accepted else None),
        "mean_travel_time_accepted": (float(np.mean([r["plan_tt"] for r in accepted]))
                                      if accepted else None),
        "shortest_path_mean_travel_time_same_seeds": (
            float(np.mean([r["sp_tt"] for r in accepted])) if accepted else None),
        "shortest_path_mean_travel_time": float(np.mean([r["sp_tt"] for r in rows])),
        "random_mean_travel_time": float(np.mean([r["random_tt"] for r in rows])),
        "samples": rows,
    }


def table(results: list[dict], header: str) -> str:
    def f(x, pct=False):
        if x is None:
            return "-"
        return f"{100 * x:.0f}%" if pct else f"{x:.1f}"

    def ratio(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [header, "",
             "| agents | departures over (s) | plans | accepted 1st round | within 2 rounds | "
             "within limit | fallback | bound / reference (median) | calls / accepted plan | "
             "travel time accepted (s) | shortest path, same seeds (s) | random (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['agents']} | {r['departure_window_s']:.0f} | {r['plans']} | "
            f"{f(r['accepted_first_round'], True)} | "
            f"{f(r['accepted_within_two_rounds'], True)} | {f(r['accepted_within_limit'], True)}"
            f" | {f(r['fallback'], True)} | {ratio(r['median_bound_ratio'])} | "
            f"{f(r['model_calls_per_accepted_plan'])} | {f(r['mean_travel_time_accepted'])} | "
            f"{f(r['shortest_path_mean_travel_time_same_seeds'])} | "
            f"{f(r['random_mean_travel_time'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", default="aguascalientes")
    ap.add_argument("--rows", nargs="+", default=["20", "100", "300", "300@300"],
                    help="agents, or agents@departure window in s")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--model", default="offline")
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--epsilon", type=float, default=BoundConfig().epsilon,
                    help="threshold ratio to the reference's bound quantile")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    config = TeamConfig(max_rounds=args.max_rounds, bound=BoundConfig(epsilon=args.epsilon))
    start = time.perf_counter()
    rows = [(int(r.split("@")[0]), float(r.split("@")[1]) if "@" in r else 0.0)
            for r in args.rows]
    results = [measure(args.city, n, w, args.seeds, args.model, config) for n, w in rows]
    wall = time.perf_counter() - start
    header = (f"Expert plans on {args.city}, model {args.model}, {args.seeds} seeds per row, "
              f"max {args.max_rounds} critic rounds, epsilon {config.bound.epsilon:g} x the "
              f"shortest-path plan's {config.bound.quantile:.0%} bound quantile, gamma "
              f"{config.bound.gamma}, G(i) = {config.bound.group} ({wall:.0f} s)")
    text = table(results, header)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "expert_acceptance.md").write_text(text + "\n")
        (RESULTS / "expert_acceptance.json").write_text(json.dumps(
            {"city": args.city, "model": args.model, "seeds": args.seeds,
             "config": config.model_dump(mode="json"), "wall_s": wall, "rows": results},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
