"""The core's rows of the backends benchmark, timed before and after a change (A/B).

Runs the core cells of ``benchmarks/backends.py`` (each city's free-flow case, ``--trips``
learners, the peak presets; shortest-path and congestion-aware; the core without and with
signals) in two code trees, interleaved: each pass is a fresh process per tree (with that
tree's ``relied`` and ``backends.py``), the trees alternating which runs first, so
both see the same load. Every cell is timed as ``backends.py`` times it (``drive_timed``: the
episode's steps after ``reset()``); the set-up (network already loaded: ``RoutingCore(...)``
and ``reset()``) is timed too, so work moved out of the steps would show there. Mean travel
times must be equal to the last digit in both trees (the change must not change a result);
the script fails otherwise.

    python benchmarks/core_speed.py --before /work/wt-base --after . --repeats 5 --json

writes ``results/core_speed.{json,md}``: per cell the median wall time of each tree, the
speed-up, the load average over each pass, and both trees' commits; and, indicative only,
each core wall of ``results/backends.json`` (the idle-machine run) divided by that speed-up
against the SUMO walls there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
POLICIES = ("shortest-path", "congestion-aware")


def worker(tree: Path, trips: int, seed: int, cities: list[str]) -> list[dict]:
    """Every core cell once with ``tree``'s ``relied`` (on PYTHONPATH) and ``backends.py``."""
    sys.path.insert(0, str(tree / "benchmarks"))
    import backends as b

    import relied
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.env.policies import make_policy
    from relied.env.presets import load_preset
    from relied.env.scenario import Scenario

    cases = [(f"{c} free flow", b.free_flow_scenario(c, 60, seed)) for c in cities]
    cases += [(f"{c} {trips} trips", Scenario(city=c, n_agents=trips, seed=seed,
                                              departure_window_s=600.0)) for c in cities]
    cases += [(f"{c}-peak", load_preset(f"{c}-peak").scenario) for c in cities]
    if Path(relied.__file__).resolve().parent.parent != tree.resolve():
        raise SystemExit(f"relied imported from {relied.__file__}, not from {tree}")
    # untimed warm-up, the same in both trees: a compiled kernel is built (or loaded from
    # numba's disk cache) at its first call in a process, which no cell's steps should hold
    start = time.perf_counter()
    warm = cases[0][1]
    for signals in (False, True):
        b.drive_timed(RoutingCore(load_city(warm.city),
                                  warm.model_copy(update={"signals": signals})),
                      make_policy("shortest-path", seed))
    warmup = time.perf_counter() - start
    rows = []
    for label, scenario in cases:
        net = load_city(scenario.city)
        for backend, signals in (("core", False), ("core-signals", True)):
            for policy in POLICIES:
                start = time.perf_counter()
                core = RoutingCore(net, scenario.model_copy(update={"signals": signals}))
                pol = make_policy(policy, scenario.seed)
                core.reset()
                setup = time.perf_counter() - start
                m, steps, wall = b.drive_timed(core, pol)
                rows.append({"case": label, "backend": backend, "policy": policy,
                             "wall_s": wall, "setup_s": setup, "steps": steps,
                             "warmup_s": warmup,
                             "mean_travel_time": m["mean_travel_time"]})
    return rows


def run_pass(tree: Path, args) -> dict:
    """One worker process on ``tree``; its rows and the load average around it."""
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), OMP_NUM_THREADS="1")
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--worker", str(tree), "--trips",
                          str(args.trips), "--seed", str(args.seed), "--cities", *args.cities],
                         env=env, capture_output=True, text=True, check=True, cwd=tree)
    return {"rows": json.loads(out.stdout.splitlines()[-1]),
            "load": [load, os.getloadavg()[0]]}


def commit(tree: Path) -> str:
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--",
                            "relied", "benchmarks/backends.py"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def compare(passes: dict[str, list[dict]]) -> list[dict]:
    """Per cell: median wall and set-up time of each tree, speed-up; equal results checked."""
    key = ("case", "backend", "policy")
    cells = []
    for i, first in enumerate(passes["before"][0]["rows"]):
        cell = {k: first[k] for k in key} | {"steps": first["steps"],
                                             "mean_travel_time": first["mean_travel_time"]}
        for side in ("before", "after"):
            rows = [p["rows"][i] for p in passes[side]]
            for r in rows:
                if any(r[k] != first[k] for k in key) or \
                        r["mean_travel_time"] != first["mean_travel_time"] or \
                        r["steps"] != first["steps"]:
                    raise SystemExit(f"results differ in {[first[k] for k in key]} ({side}): "
                                     f"{r['mean_travel_time']!r} vs {first['mean_travel_time']!r}")
            cell[f"wall_{side}_s"] = statistics.median(r["wall_s"] for r in rows)
            cell[f"setup_{side}_s"] = statistics.median(r["setup_s"] for r in rows)
        cell["speedup"] = cell["wall_before_s"] / cell["wall_after_s"]
        cells.append(cell)
    return cells


def warmup(result: dict, side: str) -> float:
    """Median untimed warm-up of ``side``'s passes (0 for results that have none)."""
    return statistics.median(p["rows"][0].get("warmup_s", 0.0) for p in result["passes"][side])


def markdown(result: dict) -> str:
    loads = [x for side in ("before", "after") for p in result["passes"][side]
             for x in p["load"]]
    lines = ["# The core's backends cells, before and after (A/B, interleaved)", "",
             f"Command: `{result['command']}`", "",
             f"Trees: before `{result['before']['commit']}`, after "
             f"`{result['after']['commit']}`. {result['repeats']} passes per tree, "
             "alternating (a fresh process per pass); medians. Load average (1 min) around "
             f"the passes: {min(loads):.1f}-{max(loads):.1f} on {result['cpus']} cores "
             "(shared with other engineers' jobs): absolute seconds are those of that load, "
             "the ratio is the figure. Wall: the episode's steps as `backends.py` times them; "
             "set-up: `RoutingCore(...)` + `reset()`, outside the timed steps in both. Mean "
             "travel times are equal in both trees in every pass (checked). Before the cells, "
             "each pass drives the first case untimed, with and without signals (a compiled "
             "kernel is built or loaded from numba's disk cache at its first call in a "
             "process): median "
             + ", ".join(f"{side} {warmup(result, side):.2f} s" for side in ("before", "after"))
             + ".", "",
             "| case | core | policy | steps | mean tt (s) | wall before (s) | wall after (s) "
             "| speed-up | set-up before (s) | set-up after (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["cells"]:
        lines.append(f"| {c['case']} | {c['backend']} | {c['policy']} | {c['steps']} | "
                     f"{c['mean_travel_time']:.2f} | {c['wall_before_s']:.3f} | "
                     f"{c['wall_after_s']:.3f} | {c['speedup']:.2f}x | "
                     f"{c['setup_before_s']:.3f} | {c['setup_after_s']:.3f} |")
    projected = result.get("projected")
    if projected:
        lines += ["", "## Projected against the idle-machine backends run (indicative)", "",
                  f"From `{projected['source']}` ({projected['command']}, load "
                  f"{projected['load']}): each core wall time there divided by this run's "
                  "speed-up, against the SUMO walls of the same run. A projection, not a "
                  "measurement: the goals are read from the backends run on an idle machine.",
                  "", "| case | core | policy | core wall then (s) | projected (s) | "
                  "vs SUMO micro | vs SUMO meso |", "|---|---|---|---:|---:|---:|---:|"]
        for r in projected["cells"]:
            lines.append(f"| {r['case']} | {r['backend']} | {r['policy']} | "
                         f"{r['wall_then_s']:.3f} | {r['wall_projected_s']:.3f} | "
                         f"{r['vs_micro']:.1f}x | {r['vs_meso']:.1f}x |")
        for b in ("core", "core-signals"):
            mine = [r for r in projected["cells"] if r["backend"] == b]
            lines.append(f"\n{b}: >= 50x vs micro in {sum(r['vs_micro'] >= 50 for r in mine)} "
                         f"of {len(mine)} cells (then {sum(r['then_vs_micro'] >= 50 for r in mine)}"
                         f"), >= 10x vs meso in {sum(r['vs_meso'] >= 10 for r in mine)} of "
                         f"{len(mine)} (then {sum(r['then_vs_meso'] >= 10 for r in mine)}).")
    return "\n".join(lines + [""])


def project(cells: list[dict], path: Path) -> dict | None:
    """Each core cell of the backends results at ``path`` with its wall time divided by the
    speed-up measured here, against that run's SUMO walls (netconvert's programs)."""
    if not path.is_file():
        return None
    backends = json.loads(path.read_text())
    speed = {(c["case"].split(" (")[0], c["backend"], c["policy"]): c["speedup"]
             for c in cells}
    out = []
    for case in backends["cases"]:
        rows = {(r["backend"], r["policy"]): r for r in case["rows"]}
        label = case["case"].split(" (")[0]
        for (backend, policy), r in rows.items():
            if (label, backend, policy) not in speed:
                continue
            wall = r["wall_s"] / speed[(label, backend, policy)]
            micro, meso = rows[("sumo", policy)]["wall_s"], rows[("sumo-meso", policy)]["wall_s"]
            out.append({"case": label, "backend": backend, "policy": policy,
                        "wall_then_s": r["wall_s"], "wall_projected_s": wall,
                        "vs_micro": micro / wall, "vs_meso": meso / wall,
                        "then_vs_micro": micro / r["wall_s"], "then_vs_meso": meso / r["wall_s"]})
    return {"source": str(path.relative_to(Path(__file__).parent.parent)),
            "command": backends["command"], "load": backends.get("load"), "cells": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="code tree before the change")
    ap.add_argument("--after", type=Path, default=Path(__file__).parent.parent)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trips", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cities", nargs="+", default=["aguascalientes", "monaco"])
    ap.add_argument("--json", action="store_true", help="write results/core_speed.{json,md}")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # (one pass, this tree)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.trips, args.seed, args.cities)))
        return
    if args.before is None:
        ap.error("--before is required (a worktree of the commit before the change)")
    trees = {"before": args.before, "after": args.after}
    passes: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.repeats):
        for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
            passes[side].append(run_pass(trees[side], args))
            print(f"pass {r + 1} {side}: load {passes[side][-1]['load']}", file=sys.stderr,
                  flush=True)
    result = {"command": "benchmarks/core_speed.py " + " ".join(sys.argv[1:]),
              "before": {"tree": str(args.before), "commit": commit(args.before)},
              "after": {"tree": str(args.after), "commit": commit(args.after)},
              "repeats": args.repeats, "python": platform.python_version(),
              "cpus": os.cpu_count(), "passes": passes, "cells": compare(passes)}
    result["projected"] = project(result["cells"], RESULTS / "backends.json")
    text = markdown(result)
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "core_speed.json").write_text(json.dumps(result, indent=2))
        (RESULTS / "core_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
