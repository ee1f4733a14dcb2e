"""Throughput of the traffic core: queue model beside the BPR model on the same demand.

For each fleet size, one episode per traffic model on ``--city`` (queue and BPR interleaved,
``--repeats`` times, medians reported), run until every vehicle arrived or the horizon:

* ``step``: the simulator alone (every vehicle but one is background traffic on its free-flow
  shortest path, the core makes the choices; the one learner follows the shortest path);
* ``rl``: the RL loop, every vehicle a learner: shortest-path policy + action mask + ``step``
  (with its observation) each step, for fleets up to ``--rl-max``.

Demand: origins and destinations uniform over the city's nodes (trips >= 600 m), departures
uniform over a window proportional to the fleet, ``vehicles / --rate`` seconds, and a horizon
of that window + 1,800 s. The same demand for both models. Why a rate and not a fixed window:
a road network carries a bounded flow, so releasing 100,000 vehicles within half an hour on
north-bayreuth (the largest shipped city: 1,456 edges that store 54,627 vehicles when jammed)
is physical gridlock, not a throughput test. The default rate, 1.25 veh/s, is one both models
carry; the benchmark also runs ``--check-rates`` once at ``--check-vehicles`` and reports the
trips each model completes there (the "demand check" table), so the choice can be judged.

Reported: wall and CPU time, steps, trips completed, simulated vehicle-seconds counting only
vehicles en route (departed, not arrived), vehicle-seconds and trips per wall second, and wall
time per completed trip. Goals (issue 7): the queue core's wall time per trip no higher than
BPR's at 1,000 and 100,000 vehicles, and its cost per trip falling as vehicles grow.

    python benchmarks/env_throughput.py [--json] [--vehicles 1000 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from relied.env.cities import load_city  # noqa: E402
from relied.env.core import ARRIVED, WAITING, RoutingCore  # noqa: E402
from relied.env.policies import ShortestPathPolicy  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = ("queue", "bpr")


def scenario(city: str, vehicles: int, model: str, mode: str, window: float) -> Scenario:
    learners = 1 if mode == "step" else vehicles
    return Scenario(city=city, n_agents=learners, background_share=1 - learners / vehicles,
                    seed=0, departure_window_s=window, horizon_s=window + 1800.0,
                    traffic_model=model)


def episode(net, sc: Scenario, mode: str) -> dict:
    core = RoutingCore(net, sc)
    policy = ShortestPathPolicy()
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    while core.t < sc.n_steps and core.n_arrived < core.n_all:
        if mode == "rl":
            core.action_mask()
        core.step(policy(core))  # in "step" mode the policy drives one vehicle only
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    departed = core.v_status != WAITING
    arrived = core.v_status == ARRIVED
    end = np.where(arrived, core.v_arrival, core.time_s)
    trip = (end - core.v_depart)[departed]
    return {"steps": core.t, "wall_s": wall, "cpu_s": cpu, "load_1min": load,
            "trips": int(arrived.sum()), "vehicle_seconds": float(trip.sum()),
            "mean_trip_s": float((core.v_arrival - core.v_depart)[arrived].mean()),
            "forced_entries": core.forced}


def summarise(runs: list[dict], **key) -> dict:
    first = runs[0]
    assert all(r["trips"] == first["trips"] and r["steps"] == first["steps"] for r in runs)
    wall = statistics.median(r["wall_s"] for r in runs)
    trips = max(first["trips"], 1)
    return key | {k: first[k] for k in ("steps", "trips", "vehicle_seconds", "mean_trip_s",
                                        "forced_entries")} | {
        "wall_s": wall, "wall_s_all": [r["wall_s"] for r in runs],
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "load_1min": [r["load_1min"] for r in runs],
        "wall_us_per_trip": 1e6 * wall / trips,
        "cpu_us_per_trip": 1e6 * statistics.median(r["cpu_s"] for r in runs) / trips,
        "vehicle_s_per_wall_s": first["vehicle_seconds"] / wall,
        "trips_per_wall_s": first["trips"] / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", default="north-bayreuth")
    ap.add_argument("--vehicles", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--rate", type=float, default=1.25,
                    help="departures per second: the window is vehicles / rate")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rl-max", type=int, default=1000,
                    help="largest fleet for the RL loop (every vehicle a learner)")
    ap.add_argument("--check-rates", type=float, nargs="*", default=[1.67, 2.5],
                    help="other rates run once (simulator alone) to show what each model carries")
    ap.add_argument("--check-vehicles", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    net = load_city(args.city)
    load_before = os.getloadavg()
    cases = [(n, mode) for n in args.vehicles
             for mode in (("step", "rl") if n <= args.rl_max else ("step",))]
    runs: dict[tuple, list[dict]] = {}
    for rep in range(args.repeats):
        for n, mode in cases:
            window = n / args.rate
            for model in MODELS if rep % 2 == 0 else MODELS[::-1]:  # alternate who goes first
                r = episode(net, scenario(net.name, n, model, mode, window), mode)
                runs.setdefault((n, mode, model, window), []).append(r)
                print(f"[{rep + 1}/{args.repeats}] {n:>7} {mode:>4} {model:>5}: "
                      f"{r['wall_s']:.2f} s ({r['cpu_s']:.2f} s CPU), {r['trips']} trips, "
                      f"load {r['load_1min']:.1f}", flush=True)
    rows = [summarise(rs, vehicles=n, mode=mode, model=model, window_s=window)
            for (n, mode, model, window), rs in runs.items()]
    checks = []
    for rate in args.check_rates:
        for model in MODELS:
            window = args.check_vehicles / rate
            r = episode(net, scenario(net.name, args.check_vehicles, model, "step", window),
                        "step")
            checks.append({"rate_vps": rate, "vehicles": args.check_vehicles, "model": model,
                           "window_s": window} | r)
            print(f"check {rate:g} veh/s {model:>5}: {r['trips']} of {args.check_vehicles} "
                  f"trips, mean {r['mean_trip_s']:.0f} s", flush=True)
    goals = {}
    for n, mode in cases:
        q, b = ([r for r in rows if r["vehicles"] == n and r["mode"] == mode
                 and r["model"] == m][0] for m in MODELS)
        goals[f"{mode}_{n}_queue_per_trip_le_bpr"] = q["wall_us_per_trip"] <= \
            b["wall_us_per_trip"]
    queue_step = [r for r in rows if r["model"] == "queue" and r["mode"] == "step"]
    goals["queue_cost_per_trip_falls_with_vehicles"] = all(
        a["wall_us_per_trip"] > b["wall_us_per_trip"]
        for a, b in zip(queue_step, queue_step[1:], strict=False))
    out = {"benchmark": "env_throughput", "city": args.city, "rate_vps": args.rate,
           "repeats": args.repeats, "python": platform.python_version(),
           "numpy": np.__version__,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work "
                      "while measured; queue and BPR interleaved, one process",
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "rows": rows, "demand_check": checks, "goals": goals}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "env_throughput.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "env_throughput.md").write_text(markdown(out))
    print(json.dumps(out) if args.json else markdown(out))


def markdown(out: dict) -> str:
    lb, la = out["loadavg_before"], out["loadavg_after"]
    lines = [f"City {out['city']}; command: `python benchmarks/env_throughput.py` "
             f"(median of {out['repeats']} interleaved repeats; departures uniform over "
             f"vehicles / {out['rate_vps']:g} veh/s, horizon window + 1,800 s; load average "
             f"{lb[0]:.1f}/{lb[1]:.1f}/{lb[2]:.1f} before, {la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} "
             f"after, {out['machine']})", "",
             "| vehicles | loop | model | window (s) | wall (s) | CPU (s) | steps | trips | "
             "mean trip (s) | us / trip | M veh-s / s | trips / s |", "|" + "---|" * 12]
    for r in out["rows"]:
        lines.append(f"| {r['vehicles']:,} | {r['mode']} | {r['model']} | {r['window_s']:,.0f} | "
                     f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['steps']:,} | "
                     f"{r['trips']:,} | {r['mean_trip_s']:.0f} | {r['wall_us_per_trip']:.1f} | "
                     f"{r['vehicle_s_per_wall_s'] / 1e6:.2f} | {r['trips_per_wall_s']:,.0f} |")
    lines += ["", "Goals: " + ", ".join(f"{k}: {v}" for k, v in out["goals"].items()), "",
              "Demand: the same trips for both models, departures spread over a window "
              "proportional to the fleet, because a city carries a bounded flow: "
              "north-bayreuth stores 54,627 vehicles when jammed, and the previous version of "
              "this benchmark, releasing 100,000 vehicles within 30 min, jammed it for both "
              "models (2,137 trips completed in the hour with queues, 33,115 with BPR; commit "
              "1f546cb). Demand check (simulator alone, one run each; trips completed by the "
              "horizon, window + 1,800 s):", "",
              "| rate (veh/s) | vehicles | model | trips | mean trip (s) | forced entries |",
              "|---|---|---|---|---|---|"]
    for c in out["demand_check"]:
        lines.append(f"| {c['rate_vps']:g} | {c['vehicles']:,} | {c['model']} | "
                     f"{c['trips']:,} | {c['mean_trip_s']:.0f} | {c['forced_entries']} |")
    checked = {c["vehicles"] for c in out["demand_check"]}
    for r in out["rows"]:  # the benchmark's own rate at the checked fleet, for comparison
        if r["mode"] == "step" and r["vehicles"] in checked:
            lines.append(f"| {out['rate_vps']:g} | {r['vehicles']:,} | {r['model']} | "
                         f"{r['trips']:,} | {r['mean_trip_s']:.0f} | {r['forced_entries']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
