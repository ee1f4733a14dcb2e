"""Validation of the queue model: analytic cases, and side by side with UXsim.

1. Deterministic queueing: a bottleneck fed above its capacity discharges at its capacity, and
   each vehicle's delay matches D/D/1 (``n/mu - n/lambda``); a full downstream edge holds
   vehicles upstream (spillback) with every vehicle accounted for at every step.
2. UXsim (pip ``uxsim``; Newell's simplified kinematic-wave model, compiled engine
   ``World(cpp=True)``, ``deltan=1``) on aguascalientes with the same nodes, edges, free-flow
   speeds, lanes, outflow capacities, jam density (1 / 7.5 m per lane), 1,000 identical trips
   all departing at t = 0 and identical routes (the free-flow shortest paths, enforced in
   UXsim). Intersection green shares are set to 1 here, since UXsim's nodes have no capacity of
   their own by default. Reported: relied mean travel time / UXsim's (goal within 15%) and UXsim
   wall time / relied wall time for the episode (goal >= 5), each timed as the median of 3
   runs after a warm-up, excluding set-up.

    python benchmarks/validate_traffic.py [--json] [--trips 1000] [--dt 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from relied.env.cities import load_city  # noqa: E402
from relied.env.core import ARRIVED, AT_NODE, ON_EDGE, QUEUED, RoutingCore  # noqa: E402
from relied.env.network import JAM_SPACING_M, CityNetwork  # noqa: E402
from relied.env.policies import ShortestPathPolicy  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def line(saturation, storage, length) -> CityNetwork:
    n = len(length) + 1
    return CityNetwork.from_edges(
        "line", lon=np.linspace(0, 0.01, n), lat=np.zeros(n), src=np.arange(n - 1),
        dst=np.arange(1, n), length_m=np.array(length), speed_kph=np.full(n - 1, 36.0),
        saturation_vps=np.array(saturation, dtype=float), green_share=np.ones(n - 1),
        storage=np.array(storage, dtype=float))


def line_trips(net: CityNetwork, departures, **kw) -> Scenario:
    m = len(departures)
    return Scenario(city="line", n_agents=m, origins=[0] * m,
                    destinations=[int(net.osm_ids[-1])] * m, departures_s=list(departures),
                    min_trip_m=0, **kw)


def run_all(core: RoutingCore, check=None) -> float:
    """Step until every vehicle (learners and background) arrived; returns wall seconds."""
    policy = ShortestPathPolicy()
    start = time.perf_counter()
    while core.t < core.scenario.n_steps and not (core.v_status == ARRIVED).all():
        core.step(policy(core))
        if check is not None:
            check(core)
    return time.perf_counter() - start


def bottleneck(dt: float) -> dict:
    mu, lam, n = 0.25, 1.0, 60
    net = line([5.0, mu, 5.0], [1e4] * 3, (500.0, 200.0, 500.0))
    core = RoutingCore(net, line_trips(net, np.arange(n) / lam, dt_s=dt), record_traversals=True)
    run_all(core)
    i = np.arange(n)
    analytic_delay = np.maximum(i / mu - i / lam, 0.0)
    delay = core.travel_times() - net.freeflow_s.sum()
    _, edge, _, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
    out = np.sort(left[edge == 1])
    return {"dt_s": dt, "capacity_vps": mu, "arrival_rate_vps": lam, "vehicles": n,
            "measured_discharge_vps": float((n - 1) / (out[-1] - out[0])),
            "mean_delay_s": float(delay.mean()), "dd1_mean_delay_s": float(analytic_delay.mean()),
            "max_abs_delay_error_s": float(np.abs(delay - analytic_delay).max())}


def spillback() -> dict:
    net = line([2.0, 0.1, 2.0], [100, 5, 100], (500.0, 40.0, 500.0))
    n = 40
    core = RoutingCore(net, line_trips(net, np.arange(n) * 0.5, stuck_time_s=1e6,
                                       horizon_s=3000))
    worst = {"unaccounted": 0, "held_steps": 0, "max_stored_bottleneck": 0.0}

    def check(c: RoutingCore) -> None:
        en_route = np.isin(c.v_status, [AT_NODE, QUEUED, ON_EDGE])
        miss = en_route.sum() - c.count.sum() - (en_route & (c.v_edge < 0)).sum()
        worst["unaccounted"] = max(worst["unaccounted"], int(abs(miss)))
        worst["max_stored_bottleneck"] = max(worst["max_stored_bottleneck"], float(c.stored[1]))
        held = (c.v_edge == 0) & (c.v_status == QUEUED) & (c.ready_s <= c.time_s)
        worst["held_steps"] += int(held.any() and c.stored[1] >= 5)

    run_all(core, check)
    return {"bottleneck_storage": 5, "vehicles": n, **worst,
            "all_arrived": bool((core.v_status == ARRIVED).all()), "forced_entries": core.forced}


def shortest_routes(net: CityNetwork, origins: np.ndarray, dests: np.ndarray) -> list[list[int]]:
    """Edge routes of the free-flow greedy choice the core's background vehicles make."""
    from relied.env.live import cost_to_go

    ids, row = np.unique(dests, return_inverse=True)
    to_go = cost_to_go(net, ids)
    table = net.out_edge_table()
    routes = []
    for o, d, r in zip(origins, dests, row, strict=True):
        node, route = int(o), []
        while node != d:
            slots = table[node][table[node] >= 0]
            e = int(slots[np.argmin(net.freeflow_s[slots] + to_go[r, net.edge_dst[slots]])])
            route.append(e)
            node = int(net.edge_dst[e])
        routes.append(route)
    return routes


def relied_episode(net: CityNetwork, trips: int, dt: float) -> tuple[float, float, Scenario]:
    sc = Scenario(city=net.name, n_agents=1, background_share=1 - 1 / trips, seed=1, dt_s=dt,
                  horizon_s=3600)
    walls, mean = [], 0.0
    for _ in range(4):  # warm-up + 3
        core = RoutingCore(net, sc)
        walls.append(run_all(core))
        mean = float(np.concatenate([core.travel_times(), core.travel_times(True)]).mean())
    return mean, float(np.median(walls[1:])), core.scenario


def uxsim_episode(net: CityNetwork, sc: Scenario) -> tuple[float, float, int]:
    import uxsim

    core = RoutingCore(net, sc)
    origins, dests = core.v_origin, core.v_dest
    routes = shortest_routes(net, origins, dests)
    walls, mean, unfinished = [], 0.0, 0
    x = (net.lon - net.lon.mean()) * 111_320 * np.cos(np.deg2rad(net.lat.mean()))
    y = (net.lat - net.lat.mean()) * 110_540
    for _ in range(4):
        W = uxsim.World(name="", deltan=1, tmax=3600, print_mode=0, save_mode=0, show_mode=0,
                        random_seed=0, cpp=True)
        for v in range(net.n_nodes):
            W.addNode(f"n{v}", float(x[v]), float(y[v]))
        for e in range(net.n_edges):
            W.addLink(f"e{e}", f"n{net.edge_src[e]}", f"n{net.edge_dst[e]}",
                      length=float(net.length_m[e]),
                      free_flow_speed=float(net.length_m[e] / net.freeflow_s[e]),
                      jam_density_per_lane=1.0 / JAM_SPACING_M,
                      number_of_lanes=max(1, int(round(net.lanes[e]))),
                      capacity_out=float(net.saturation_vps[e]))
        vehicles = []
        for i, (o, d, route) in enumerate(zip(origins, dests, routes, strict=True)):
            veh = W.addVehicle(f"n{o}", f"n{d}", 0.0, name=f"v{i}")
            veh.enforce_route([f"e{e}" for e in route])
            vehicles.append(veh)
        start = time.perf_counter()
        W.exec_simulation()
        walls.append(time.perf_counter() - start)
        tt = np.array([v.travel_time for v in vehicles], dtype=float)
        unfinished = int((tt <= 0).sum())
        mean = float(tt[tt > 0].mean())
    return mean, float(np.median(walls[1:])), unfinished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trips", type=int, default=1000)
    ap.add_argument("--dt", type=float, nargs="*", default=[1.0, 2.0])
    args = ap.parse_args()
    out = {"benchmark": "validate_traffic", "python": platform.python_version(),
           "machine": f"{platform.machine()}, 2 cores (shared with other work while measured)",
           "bottleneck": [bottleneck(dt) for dt in (1.0, 5.0)], "spillback": spillback()}
    try:
        import uxsim
    except ImportError:
        out["uxsim"] = "skipped: UXsim is not installed (pip install 'relied[validate]')"
        print("UXsim is not installed: pip install 'relied[validate]' to compare with it",
              file=sys.stderr)
    else:
        net = load_city("aguascalientes")
        net = dataclasses.replace(net, green_share=np.ones(net.n_edges))
        rows = []
        ux_mean = ux_wall = None
        for dt in args.dt:
            mean, wall, sc = relied_episode(net, args.trips, dt)
            if ux_mean is None:
                ux_mean, ux_wall, unfinished = uxsim_episode(net, sc)
            rows.append({"dt_s": dt, "relied_mean_travel_time": mean, "relied_wall_s": wall,
                         "uxsim_mean_travel_time": ux_mean, "uxsim_wall_s": ux_wall,
                         "travel_time_ratio": mean / ux_mean, "speedup": ux_wall / wall,
                         "goal_travel_time_within_15pct": abs(mean / ux_mean - 1) <= 0.15,
                         "goal_speedup_5x": ux_wall / wall >= 5})
        out["uxsim"] = {"version": uxsim.__version__, "trips": args.trips,
                        "uxsim_unfinished": unfinished, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validate_traffic.json").write_text(json.dumps(out, indent=1))
    lines = ["Command: `python benchmarks/validate_traffic.py`", "",
             "| D/D/1 case | dt (s) | discharge (veh/s) | capacity | mean delay (s) | D/D/1 (s) "
             "| max error (s) |", "|---|---|---|---|---|---|---|"]
    for b in out["bottleneck"]:
        lines.append(f"| bottleneck | {b['dt_s']:g} | {b['measured_discharge_vps']:.4f} | "
                     f"{b['capacity_vps']:g} | {b['mean_delay_s']:.2f} | "
                     f"{b['dd1_mean_delay_s']:.2f} | {b['max_abs_delay_error_s']:.2e} |")
    s = out["spillback"]
    lines += ["", f"Spillback: {s['vehicles']} vehicles, bottleneck storage "
              f"{s['bottleneck_storage']}: held upstream in {s['held_steps']} steps, most "
              f"vehicles on the bottleneck {s['max_stored_bottleneck']:g}, unaccounted vehicles "
              f"{s['unaccounted']}, all arrived: {s['all_arrived']}.", ""]
    if isinstance(out["uxsim"], dict):
        lines += ["| dt (s) | relied mean (s) | UXsim mean (s) | ratio | relied wall (s) | "
                  "UXsim wall (s) | speed-up |", "|---|---|---|---|---|---|---|"]
        for r in out["uxsim"]["rows"]:
            lines.append(f"| {r['dt_s']:g} | {r['relied_mean_travel_time']:.1f} | "
                         f"{r['uxsim_mean_travel_time']:.1f} | {r['travel_time_ratio']:.3f} | "
                         f"{r['relied_wall_s']:.3f} | {r['uxsim_wall_s']:.3f} | "
                         f"{r['speedup']:.2f}x |")
    else:
        lines.append(out["uxsim"])
    md = "\n".join(lines) + "\n"
    (RESULTS / "validate_traffic.md").write_text(md)
    print(json.dumps(out) if args.json else md)


if __name__ == "__main__":
    main()
