"""Where one core cell of the backends benchmark spends its steps (cProfile, issue 11).

Runs one case (a peak preset by default) with one policy as ``benchmarks/backends.py`` drives it
(``advance()``, no observation), once plain for the wall time and once under cProfile, and
lists the functions by own time. The speed goal's misses are on monaco-peak, where the core's
steps are many small numpy calls over the queued vehicles; this says which ones.

    python benchmarks/core_profile.py --case monaco-peak --policy shortest-path --json

writes ``results/core_profile.{json,md}``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.presets import load_preset

RESULTS = Path(__file__).parent / "results"


def drive(core: RoutingCore, policy) -> float:
    core.reset()
    start = time.perf_counter()
    while not core.done:
        core.advance(policy(core))
    return time.perf_counter() - start


def profile(case: str, policy: str, signals: bool, top: int) -> dict:
    scenario = load_preset(case).scenario.model_copy(update={"signals": signals})
    net = load_city(scenario.city)
    core = RoutingCore(net, scenario)
    wall = drive(core, make_policy(policy, scenario.seed))
    tt, steps = core.metrics()["mean_travel_time"], core.t
    prof = cProfile.Profile()
    prof.enable()
    drive(core, make_policy(policy, scenario.seed))
    prof.disable()
    if core.metrics()["mean_travel_time"] != tt:
        raise SystemExit("the profiled run differs from the plain one")
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    steps_s = next(v[3] for (f, _, name), v in stats.items()
                   if name == "advance" and f.endswith("core.py"))
    rows = sorted(({"function": f"{Path(f).name}:{line}({name})", "calls": v[1],
                    "own_s": v[2], "cumulative_s": v[3]}
                   for (f, line, name), v in stats.items()), key=lambda r: -r["own_s"])
    return {"case": case, "policy": policy, "signals": signals, "steps": steps,
            "mean_travel_time": tt, "compiled": core.compiled, "wall_s": wall,
            "us_per_step": 1e6 * wall / steps,
            "profiled_s": total, "advance_s": steps_s, "top": rows[:top]}


def markdown(r: dict) -> str:
    lines = ["# Where the core's steps go (cProfile)", "",
             f"Command: `{r['command']}`; load {r['load']} on a 2-core machine shared with "
             "other jobs.", "",
             f"{r['case']}, {r['policy']}{' with signals' if r['signals'] else ''}: "
             f"{r['steps']} steps, mean trip {r['mean_travel_time']:.2f} s; wall "
             f"{r['wall_s']:.3f} s unprofiled ({r['us_per_step']:.0f} us per step), "
             f"{r['profiled_s']:.3f} s of own time under cProfile (its overhead included). A "
             "function's own time includes the numpy ufuncs it calls (cProfile lists Python "
             "functions and some builtins, not ufuncs). The queue discharge ran "
             + ("compiled (`kernel.discharge_queues`, a numba dispatcher cProfile does not "
                "list: its time is `_discharge_compiled`'s own)." if r.get("compiled")
                else "in numpy."), "",
             "| function | calls | own (s) | share of own time | cumulative (s) | cumulative / "
             "`advance` |", "|---|---:|---:|---:|---:|---:|"]
    for row in r["top"]:
        lines.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | "
                     f"{row['own_s'] / r['profiled_s']:.1%} | {row['cumulative_s']:.3f} | "
                     f"{row['cumulative_s'] / r['advance_s']:.1%} |")
    return "\n".join(lines + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="monaco-peak", help="a preset")
    ap.add_argument("--policy", default="shortest-path")
    ap.add_argument("--signals", action="store_true", help="the core with its signals")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="write results/core_profile.{json,md}")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    r = {"command": "benchmarks/core_profile.py " + " ".join(sys.argv[1:]),
         **profile(args.case, args.policy, args.signals, args.top)}
    r["load"] = f"{load:.1f} -> {os.getloadavg()[0]:.1f}"
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "core_profile.json").write_text(json.dumps(r, indent=2))
        (RESULTS / "core_profile.md").write_text(markdown(r))
        print(json.dumps(r))
    else:
        print(markdown(r))


if __name__ == "__main__":
    main()
