"""Calibration of the shipped peak presets: is there congestion, and is there something to gain?

For every preset and seed, the learners' mean travel time under shortest-path,
congestion-aware and equilibrium routing (background traffic as in the preset), the delay of
shortest-path over free flow, and each reference's gain over shortest-path; means with 95%
bootstrap intervals over the seeds. Goals (issue 7): shortest-path delay >= 30% and the best
reference >= 5% faster than shortest-path.

    python benchmarks/presets.py [--seeds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.presets import load_preset, preset_names
from relied.env.rollout import run_episode

POLICIES = ("shortest-path", "congestion-aware", "equilibrium")
RESULTS = Path(__file__).parent / "results"


def interval(values, reps: int = 2000, seed: int = 0) -> list[float]:
    """Mean and 95% bootstrap interval."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (reps, v.size))].mean(axis=1)
    return [float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def run_preset(name: str, seeds: int) -> dict:
    preset = load_preset(name)
    net = load_city(preset.scenario.city)
    rows = []
    for seed in range(seeds):
        sc = preset.scenario.model_copy(update={"seed": seed})
        row = {"seed": seed}
        for policy in POLICIES:
            pol = make_policy(policy, seed)
            start = time.perf_counter()
            m = run_episode(RoutingCore(net, sc), pol).metrics
            row[policy] = m["mean_travel_time"]
            row[f"{policy}_wall_s"] = time.perf_counter() - start
            row["freeflow"] = m["mean_freeflow_time"]
            row["arrival_" + policy] = m["arrival_rate"]
            if policy == "equilibrium":
                row["relative_gap"] = pol.equilibrium.relative_gap[-1]
                row["equilibrium_iterations"] = pol.equilibrium.iterations
        rows.append(row)
        print(f"{name} seed {seed}: " + ", ".join(f"{p} {row[p]:.1f} s" for p in POLICIES),
              flush=True)
    sp = np.array([r["shortest-path"] for r in rows])
    summary = {"delay_shortest_path": interval(sp / np.array([r["freeflow"] for r in rows]) - 1)}
    for p in POLICIES:
        summary[p] = interval([r[p] for r in rows])
        summary[f"gain_{p}"] = interval(1 - np.array([r[p] for r in rows]) / sp)
    best = max(POLICIES[1:], key=lambda p: summary[f"gain_{p}"][0])
    summary["best_reference"] = best
    summary["goal_delay_met"] = summary["delay_shortest_path"][0] >= 0.30
    summary["goal_gain_met"] = summary[f"gain_{best}"][0] >= 0.05
    return {"preset": name, "scenario": preset.scenario.model_dump(
        exclude={"origins", "destinations", "departures_s", "background_origins",
                 "background_destinations", "background_departures_s"}),
            "vehicles": preset.scenario.n_vehicles, "seeds": rows, "summary": summary}


def table(results: list[dict]) -> str:
    lines = ["| preset | vehicles | free flow (s) | shortest-path (s) | delay | congestion-aware "
             "(s) | gain | equilibrium (s) | gain | gap |", "|" + "---|" * 10]
    for r in results:
        s = r["summary"]
        ff = np.mean([x["freeflow"] for x in r["seeds"]])
        gap = np.mean([x["relative_gap"] for x in r["seeds"]])

        def ci(key, pct=False, s=s):
            m, lo, hi = s[key]
            f = 100 if pct else 1
            unit = "%" if pct else ""
            return f"{m * f:.1f}{unit} [{lo * f:.1f}, {hi * f:.1f}]"

        lines.append(f"| {r['preset']} | {r['vehicles']:,} | {ff:.1f} | "
                     f"{ci('shortest-path')} | {ci('delay_shortest_path', True)} | "
                     f"{ci('congestion-aware')} | {ci('gain_congestion-aware', True)} | "
                     f"{ci('equilibrium')} | {ci('gain_equilibrium', True)} | "
                     f"{100 * gap:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--presets", nargs="*", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run_preset(name, args.seeds) for name in (args.presets or preset_names())]
    out = {"benchmark": "presets", "seeds": args.seeds, "python": platform.python_version(),
           "machine": f"{platform.machine()}, 2 cores shared", "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "presets.json").write_text(json.dumps(out, indent=1))
    md = ("Learners' mean travel time (mean [95% bootstrap interval] over "
          f"{args.seeds} seeds); gains are over shortest-path; gap is the equilibrium's final "
          "relative gap. Command: `python benchmarks/presets.py`\n\n" + table(results) + "\n")
    (RESULTS / "presets.md").write_text(md)
    print(json.dumps(out) if args.json else md)


if __name__ == "__main__":
    main()
