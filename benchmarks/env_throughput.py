"""Throughput of the traffic core: queue model beside the BPR model on the same demand.

For each traffic model and fleet size, one episode on ``--city`` with departures spread over
``--window`` seconds, run until every vehicle arrived or the horizon:

* ``step``: the simulator alone (every vehicle is background traffic on its free-flow shortest
  path; the core makes the choices);
* ``rl``: the RL loop, every vehicle a learner: shortest-path policy + ``step`` + observation +
  action mask each step (up to ``--rl-max`` vehicles).

Reported: wall time, steps, trips completed, simulated vehicle-seconds counting only vehicles
en route (departed, not arrived), vehicle-seconds and trips per wall second, and wall time per
simulated trip. Goals (issue 7): the queue core's wall time per trip no higher than BPR's at
1,000 and 100,000 vehicles, and the cost per vehicle falling as vehicles grow.

    python benchmarks/env_throughput.py [--json] [--vehicles 1000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from relied.env.cities import load_city  # noqa: E402
from relied.env.core import ARRIVED, WAITING, RoutingCore  # noqa: E402
from relied.env.policies import ShortestPathPolicy  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def episode(net, vehicles: int, model: str, mode: str, window: float, horizon: float) -> dict:
    if mode == "step":
        sc = Scenario(city=net.name, n_agents=1, background_share=1 - 1 / vehicles, seed=0,
                      departure_window_s=window, horizon_s=horizon, traffic_model=model)
    else:
        sc = Scenario(city=net.name, n_agents=vehicles, seed=0, departure_window_s=window,
                      horizon_s=horizon, traffic_model=model)
    core = RoutingCore(net, sc)
    policy = ShortestPathPolicy()
    start = time.perf_counter()
    while core.t < sc.n_steps and not (core.v_status == ARRIVED).all():
        if mode == "rl":
            core.action_mask()
        core.step(policy(core))  # in "step" mode the policy drives one vehicle only
    wall = time.perf_counter() - start
    departed = core.v_status != WAITING
    end = np.where(np.isnan(core.v_arrival), core.time_s, core.v_arrival)
    veh_s = float((end - core.v_depart)[departed].sum())
    trips = int((core.v_status == ARRIVED).sum())
    return {"model": model, "mode": mode, "vehicles": vehicles, "steps": core.t,
            "wall_s": wall, "trips": trips, "vehicle_seconds": veh_s,
            "vehicle_s_per_wall_s": veh_s / wall, "trips_per_wall_s": trips / wall,
            "wall_us_per_trip": 1e6 * wall / max(trips, 1),
            "mean_travel_time": veh_s / max(int(departed.sum()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", default="north-bayreuth")
    ap.add_argument("--vehicles", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--rl-max", type=int, default=10_000,
                    help="largest fleet for the RL loop (every vehicle a learner)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    net = load_city(args.city)
    rows = []
    for n in args.vehicles:
        window = 600.0 if n <= 1000 else 1800.0
        for mode in ("step", "rl") if n <= args.rl_max else ("step",):
            for model in ("queue", "bpr"):
                r = episode(net, n, model, mode, window, horizon=window + 1800.0)
                r["window_s"] = window
                rows.append(r)
                print(f"{n:>7} {mode:>4} {model:>5}: {r['wall_s']:.2f} s, {r['trips']} trips, "
                      f"{r['wall_us_per_trip']:.1f} us/trip, "
                      f"{r['vehicle_s_per_wall_s'] / 1e6:.2f} M veh-s/s", flush=True)
    goals = {}
    for n in args.vehicles:
        for mode in ("step", "rl") if n <= args.rl_max else ("step",):
            q, b = ([r for r in rows if r["vehicles"] == n and r["mode"] == mode
                     and r["model"] == m][0] for m in ("queue", "bpr"))
            goals[f"{mode}_{n}_queue_per_trip_le_bpr"] = q["wall_us_per_trip"] <= \
                b["wall_us_per_trip"]
    queue_step = [r for r in rows if r["model"] == "queue" and r["mode"] == "step"]
    goals["queue_cost_per_trip_falls_with_vehicles"] = all(
        a["wall_us_per_trip"] > b["wall_us_per_trip"]
        for a, b in zip(queue_step, queue_step[1:], strict=False))
    out = {"benchmark": "env_throughput", "city": args.city, "python": platform.python_version(),
           "machine": f"{platform.machine()}, one core of 2 (shared with other work while "
                      "measured; queue and BPR run interleaved)", "rows": rows, "goals": goals}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "env_throughput.json").write_text(json.dumps(out, indent=1))
    lines = [f"City {args.city}; command: `python benchmarks/env_throughput.py`", "",
             "| vehicles | loop | model | wall (s) | steps | trips | mean trip (s) | "
             "us / trip | M veh-s / s | trips / s |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['vehicles']:,} | {r['mode']} | {r['model']} | {r['wall_s']:.2f} | "
                     f"{r['steps']} | {r['trips']:,} | {r['mean_travel_time']:.0f} | "
                     f"{r['wall_us_per_trip']:.1f} | {r['vehicle_s_per_wall_s'] / 1e6:.2f} | "
                     f"{r['trips_per_wall_s']:,.0f} |")
    lines += ["", "Goals: " + ", ".join(f"{k}: {v}" for k, v in goals.items())]
    md = "\n".join(lines) + "\n"
    (RESULTS / "env_throughput.md").write_text(md)
    print(json.dumps(out) if args.json else md)


if __name__ == "__main__":
    main()
