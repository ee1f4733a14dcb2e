"""Side by side: the core, SUMO micro and SUMO meso on the same demand (issue 11).

For each city, the same Scenario is run with shortest-path and congestion-aware routing on each
backend: a free-flow case (``--free-flow-trips`` of the 1,000-trip ODs, one departure every
30 s: the two networks compared apart from congestion), ``--trips`` learners departing over
``--window`` s, and with ``--presets`` the congested peak presets. The core runs twice: without
signals (``core``, the default of every other figure) and with its fixed-time signals
(``core-signals``, ``Scenario.signals``), beside SUMO with its traffic lights. Reported: mean
travel time, arrival rate, SUMO teleports, and the wall time of the episode's steps (driven
with ``advance()``, no observations: the policies read none); per city,
which junctions are signalised in the core and in the SUMO net. A diagnostic row runs SUMO
meso with its traffic lights off (``--nosignals-rows``: the free-flow cases by default).
Goals, as ratios within one run, for each core: >= 50x faster than SUMO micro and >= 10x
faster than SUMO meso (wall time); mean travel time within 20% of SUMO meso's; the policy
ranking the same as in SUMO micro and meso.

    .venv/bin/python benchmarks/backends.py --presets --json   # writes results/backends.{json,md}

``--eval-run RUN --eval-backend sumo|sumo-meso`` instead evaluates a trained run as ``relied
eval RUN --backend ...`` does (held-out seeds: ``--seeds``, default run seed + 1000..1002) and
merges it into ``results/sumo_eval.{json,md}``: rankings in each simulator and the gain
carry-over. One process per backend (libsumo runs one SUMO per process; run both at once):

    relied train --preset aguascalientes-peak --algo reled --experts offline --demo-scenarios 2 \
        --steps 30000 --seed 0 --bound-every 5 --runs-dir /tmp/runs
    .venv/bin/python benchmarks/backends.py --eval-run /tmp/runs/aguascalientes/reled/0 \
        --eval-backend sumo-meso --seeds 1000,1001 --json
    .venv/bin/python benchmarks/backends.py --eval-run /tmp/runs/aguascalientes/reled/0 \
        --eval-backend sumo --seeds 1000,1001 --json

``--markdown-only`` rewrites both ``.md`` files from their JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from relied.env.cities import city_source, load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.scenario import Scenario
from relied.env.sumo import load_sumo_network, make_core
from relied.env.sumo.core import SIM_OPTIONS, SumoCore
from relied.env.sumo.network import NETCONVERT_OPTIONS, TURN_PASS_OPTIONS

RESULTS = Path(__file__).parent / "results"
POLICIES = ("shortest-path", "congestion-aware")


#: Diagnostic row: SUMO meso with its traffic lights off (``--tls.all-off``), beside the core
#: without signals.
NOSIGNALS = "sumo-meso-nosignals"
#: The core with its fixed-time signals (``Scenario.signals``), beside SUMO with its lights.
CORE_SIGNALS = "core-signals"
CORES = ("core", CORE_SIGNALS)
#: Row-name suffix of the SUMO rows per source of SUMO's traffic-light programs
#: (``--sumo-signals``): netconvert's (rows ``sumo``, ``sumo-meso``, as before) or the core's
#: plans (``SumoCore(signal_plans="core")``, relied/env/sumo/signals.py).
SUFFIX = {"netconvert": "", "core": "+core-plans"}
#: Goals of ``core-signals`` against SUMO running the same (the core's) plans.
CORE_PLANS_GOAL = "core-signals vs SUMO+core-plans"
#: SUMO meso with the core's junction model (``--green-split``: ``SumoCore(meso_junctions=
#: "green-split")``, relied/env/sumo/core.py): rows ``sumo-meso-split<suffix>``, compared with
#: the signal-free ``core``, whose junction model it is (goal ``core vs SUMO meso green-split``).
SPLIT = "sumo-meso-split"
SPLIT_GOAL = {"": "core vs SUMO meso green-split",
              SUFFIX["core"]: "core vs SUMO meso green-split on the core's plans"}


def signal_agreement(net, sumo_net) -> dict:
    """Core nodes signalised in the core (``CityNetwork.signal``) and inside a traffic-light
    junction of the SUMO net (netconvert's), and how many programs each runs."""
    import xml.etree.ElementTree as ET

    from relied.env.signals import clusters, signal_plan

    tls: set[int] = set()
    programs = 0
    for _, el in ET.iterparse(sumo_net.path):
        if el.tag == "junction" and el.get("type", "").startswith("traffic_light"):
            jid = el.get("id", "")
            parts = jid.split("_")[1:] if jid.startswith("cluster_") else [jid]
            tls |= {int(p) for p in parts if p.isdigit()}
        elif el.tag == "tlLogic":
            programs += 1
        el.clear()
    core_nodes = set(net.osm_ids.tolist())
    sumo, core = tls & core_nodes, set(net.osm_ids[net.signal].tolist())
    return {"core_signalised_nodes": len(core), "sumo_tls_core_nodes": len(sumo),
            "both": len(core & sumo), "core_only": len(core - sumo),
            "sumo_only": len(sumo - core),
            "core_programs": len(set(clusters(net)[net.signal].tolist())),
            "sumo_programs": programs,
            "core_controlled_approaches": signal_plan(net).n_controlled}


def drive_timed(core: RoutingCore, policy) -> tuple[dict, int, float]:
    """Reset ``core`` and run ``policy`` to the end with ``advance()``: no observation is
    built, on either backend, since the reference policies read none (a trained policy builds
    its own, ``TrainedPolicy``). Returns the metrics, the steps and the wall time of the
    steps (not of the reset, which starts SUMO)."""
    core.reset()
    start = time.perf_counter()
    while not core.done:
        core.advance(policy(core))
    return core.metrics(), core.t, time.perf_counter() - start


def run_case(label: str, scenario: Scenario, nosignals: bool,
             sumo_signals: tuple[str, ...] = ("netconvert",), split: bool = False) -> dict:
    net = load_city(scenario.city)
    sumo_net = load_sumo_network(net, city_source(scenario.city).path)
    rows = []
    sumo_rows = [b + suffix for suffix in (SUFFIX[o] for o in sumo_signals)
                 for b in ("sumo", "sumo-meso", *((SPLIT,) if split else ()))]
    backends = ("core", CORE_SIGNALS, *sumo_rows, *((NOSIGNALS,) if nosignals else ()))
    plans_report = None
    for backend in backends:
        for policy in POLICIES:
            if backend == NOSIGNALS:
                core = SumoCore(net, scenario, sumo_net, "meso", signals=False)
            elif backend == CORE_SIGNALS:
                core = RoutingCore(net, scenario.model_copy(update={"signals": True}))
            else:  # SUMO on the core's plans, or on netconvert's (the Scenario as it is)
                plans = "core" if backend.endswith(SUFFIX["core"]) else "netconvert"
                base = backend.removesuffix(SUFFIX["core"])
                core = make_core(net, scenario.model_copy(update={"signals": True})
                                 if plans == "core" else scenario,
                                 "sumo-meso" if base == SPLIT else base, sumo_net=sumo_net,
                                 signal_plans=plans,
                                 meso_junctions="green-split" if base == SPLIT else "control")
            m, steps, wall = drive_timed(core, make_policy(policy, scenario.seed))
            rows.append({"case": label, "backend": backend, "policy": policy, "wall_s": wall,
                         "steps": steps, "mean_travel_time": m["mean_travel_time"],
                         "mean_freeflow_time": m["mean_freeflow_time"],
                         "arrival_rate": m["arrival_rate"],
                         "teleports": m.get("teleports", 0.0),
                         "removed_vehicles": m.get("removed_vehicles", 0.0),
                         "collisions": m.get("collisions", 0.0),
                         "missed_decisions": m.get("missed_decisions", 0.0)})
            if backend not in CORES:
                plans_report = plans_report or (core.program_report.summary()
                                                if core.program_report else None)
                core.close()
            print(f"{label:28s} {backend:24s} {policy:16s} {wall:8.2f} s  "
                  f"tt {m['mean_travel_time']:7.1f} s  arrived {m['arrival_rate']:.2f}  "
                  f"teleports {m.get('teleports', 0.0):.0f}",
                  flush=True)
    return {"case": label, "city": scenario.city, "learners": scenario.n_agents,
            "vehicles": scenario.n_vehicles, "window_s": scenario.departure_window_s,
            "mapping": sumo_net.report.summary(), "signals": signal_agreement(net, sumo_net),
            "core_plans_in_sumo": plans_report, "rows": rows,
            "goals": {**({c: goals(rows, c) for c in CORES}
                         if "netconvert" in sumo_signals else {}),
                      **({CORE_PLANS_GOAL: goals(rows, CORE_SIGNALS, SUFFIX["core"])}
                         if "core" in sumo_signals else {}),
                      **({SPLIT_GOAL[SUFFIX[o]]: goals(rows, "core", SUFFIX[o], SPLIT)
                          for o in sumo_signals} if split else {})}}


def free_flow_scenario(city: str, trips: int, seed: int, gap_s: float = 30.0) -> Scenario:
    """The first ``trips`` ODs of the 1,000-trip case, one departure every ``gap_s``: vehicles
    hardly meet, so trip times compare the two networks (speeds, signals, turns), not the
    congestion models."""
    net = load_city(city)
    full = Scenario(city=city, n_agents=1000, seed=seed, departure_window_s=600.0).resolve(net)
    return Scenario(city=city, n_agents=trips, seed=seed, horizon_s=trips * gap_s + 1800.0,
                    origins=full.origins[:trips], destinations=full.destinations[:trips],
                    departures_s=[i * gap_s for i in range(trips)])


def goals(rows: list[dict], core_backend: str = "core", suffix: str = "",
          meso_backend: str = "sumo-meso") -> dict:
    """The issue's ratios for one case and one core (``core`` or ``core-signals``) against
    the SUMO rows named ``sumo<suffix>``/``<meso_backend><suffix>``, per policy, then over
    both."""
    by = {(r["backend"].removesuffix(suffix) if r["backend"].startswith("sumo") and
           r["backend"].endswith(suffix) else r["backend"], r["policy"]): r
          for r in rows if not suffix or r["backend"] in (core_backend, NOSIGNALS)
          or r["backend"].endswith(suffix)}
    out: dict = {}
    for p in POLICIES:
        core, micro, meso = by[(core_backend, p)], by[("sumo", p)], by[(meso_backend, p)]
        out[p] = {"speedup_vs_micro": micro["wall_s"] / core["wall_s"],
                  "speedup_vs_meso": meso["wall_s"] / core["wall_s"],
                  "tt_core_over_meso": core["mean_travel_time"] / meso["mean_travel_time"],
                  "tt_within_20pct_of_meso": abs(core["mean_travel_time"]
                                                 / meso["mean_travel_time"] - 1) <= 0.2}
    backends = (core_backend, "sumo", meso_backend)
    order = {b: sorted(POLICIES, key=lambda p: by[(b, p)]["mean_travel_time"]) for b in backends}
    out["ranking"] = order
    out["meso_backend"] = meso_backend
    out["ranking_preserved"] = all(order[b] == order[core_backend] for b in backends)
    out["speedup_micro_goal_50x_met"] = all(out[p]["speedup_vs_micro"] >= 50 for p in POLICIES)
    out["speedup_meso_goal_10x_met"] = all(out[p]["speedup_vs_meso"] >= 10 for p in POLICIES)
    out["tt_within_20pct_of_meso_met"] = all(out[p]["tt_within_20pct_of_meso"]
                                             for p in POLICIES)
    if (NOSIGNALS, POLICIES[0]) in by:  # diagnostic: the gap without SUMO's signals
        for p in POLICIES:
            out[p]["tt_core_over_meso_nosignals"] = (by[(core_backend, p)]["mean_travel_time"]
                                                     / by[(NOSIGNALS, p)]["mean_travel_time"])
    return out


def tally(cases: list[dict], core_backend: str) -> dict:
    """Goals met over all cases: cells (case x policy) with the core's mean travel time within
    20% of SUMO meso's, and cases with the ranking preserved; also over the loaded cases (not
    free flow)."""
    out = {}
    for name, pick in (("all", cases), ("loaded", [c for c in cases
                                                   if "free flow" not in c["case"]])):
        g = [c["goals"][core_backend] for c in pick if core_backend in c["goals"]]
        out[name] = {"tt_cells_within_20pct": sum(x[p]["tt_within_20pct_of_meso"]
                                                  for x in g for p in POLICIES),
                     "tt_cells": len(g) * len(POLICIES),
                     "ranking_preserved": sum(x["ranking_preserved"] for x in g),
                     "cases": len(g)}
    return out


def markdown(result: dict) -> str:
    lines = ["# Backends side by side: core vs SUMO micro vs SUMO meso", "",
             f"Command: `{result['command']}`", "",
             f"Settings: {result['settings']}", "",
             "Timings are wall time of one whole episode on a 2-core machine SHARED with other "
             "engineers' test runs at the same time (one run each, no repeats): ratios are "
             "indicative, absolute seconds noisy. Load average (1 min) at the start and end "
             f"of the run: {result.get('load', 'not recorded')}.", ""]
    for case in result["cases"]:
        window = (f", departures over {case['window_s']:.0f} s" if case["window_s"] else "")
        lines += [f"## {case['case']} ({case['vehicles']} vehicles, {case['learners']} routed by "
                  f"the policy{window})", "",
                  f"SUMO mapping: {case['mapping']}", "",
                  f"Signalised junctions (core nodes; programs = joined clusters / SUMO "
                  f"tlLogics): {case['signals']}", "",
                  "| backend | policy | wall (s) | mean tt (s) | free-flow tt (s) | arrived | "
                  "teleports | removed | collisions | missed decisions |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in case["rows"]:
            lines.append(f"| {r['backend']} | {r['policy']} | {r['wall_s']:.2f} | "
                         f"{r['mean_travel_time']:.1f} | {r['mean_freeflow_time']:.1f} | "
                         f"{r['arrival_rate']:.2f} | "
                         f"{r['teleports']:.0f} | {r['removed_vehicles']:.0f} | "
                         f"{r['collisions']:.0f} | {r['missed_decisions']:.0f} |")
        lines += [""]
        if case.get("core_plans_in_sumo"):
            lines += [f"The core's plans in SUMO (`--sumo-signals core`): "
                      f"{case['core_plans_in_sumo']}", ""]
        for c, g in case["goals"].items():
            lines += [f"| goal ({c}) | " + " | ".join(POLICIES) + " | met |",
                      "|---|---|---|---|",
                      f"| {c} >= 50x faster than SUMO micro | " + " | ".join(
                          f"{g[p]['speedup_vs_micro']:.1f}x" for p in POLICIES)
                      + f" | {g['speedup_micro_goal_50x_met']} |",
                      f"| {c} >= 10x faster than SUMO meso | " + " | ".join(
                          f"{g[p]['speedup_vs_meso']:.1f}x" for p in POLICIES)
                      + f" | {g['speedup_meso_goal_10x_met']} |",
                      f"| {c} tt within 20% of SUMO meso (ratio) | " + " | ".join(
                          f"{g[p]['tt_core_over_meso']:.2f}" for p in POLICIES)
                      + f" | {g['tt_within_20pct_of_meso_met']} |"]
            if "tt_core_over_meso_nosignals" in g[POLICIES[0]]:
                lines.append(f"| (diagnostic) {c} tt / SUMO meso tt with SUMO's lights off | "
                             + " | ".join(f"{g[p]['tt_core_over_meso_nosignals']:.2f}"
                                          for p in POLICIES) + " | |")
            name = c.split(" vs ")[0]
            meso = g.get("meso_backend", "sumo-meso")
            lines += [f"| ranking preserved ({c} {g['ranking'][name]}, micro "
                      f"{g['ranking']['sumo']}, meso {g['ranking'][meso]}) | | | "
                      f"{g['ranking_preserved']} |", ""]
    lines += ["## Goals over all cases", "",
              "| core | tt within 20% of SUMO meso (cells: case x policy) | ranking preserved "
              "(cases) | loaded cases only: tt cells | loaded: ranking |",
              "|---|---|---|---|---|"]
    for c in dict.fromkeys(k for case in result["cases"] for k in case["goals"]):
        t = tally(result["cases"], c)
        a, lo = t["all"], t["loaded"]
        lines.append(f"| {c} | {a['tt_cells_within_20pct']} of {a['tt_cells']} | "
                     f"{a['ranking_preserved']} of {a['cases']} | "
                     f"{lo['tt_cells_within_20pct']} of {lo['tt_cells']} | "
                     f"{lo['ranking_preserved']} of {lo['cases']} |")
    return "\n".join(lines + ["", *READING])


#: Why a goal can be missed (the models differ); printed under the tables.
READING = [
    "## Reading the ratios", "",
    "- Two cores: `core` (no signals: the default of every other figure in this project) and "
    "`core-signals` (`Scenario.signals`: fixed-time plans at the junctions OSM marks as "
    "signalised, read as netconvert reads them; the `Signalised junctions` line of each case "
    "compares the core's with the SUMO net's). SUMO runs with its lights; the diagnostic "
    "`sumo-meso-nosignals` row switches them off and compares with `core`.",
    "- Free-flow cases (vehicles hardly meet): with lights off on both sides SUMO meso and "
    "the core agree (same speeds, same turns); with lights on both sides what remains are "
    "plan details: SUMO's yellow is computed from netconvert's type speeds (100 km/h for "
    "untagged primary and secondary roads, so 6 s yellows where the core's plan, on the "
    "core's speeds, has 3 s), netconvert adds protected left-turn phases in some programs, "
    "and which approach is green first differs (the core starts with its most important "
    "road). With few trips the mean red wait also depends on when each vehicle arrives in "
    "the cycle.",
    "- Under load, SUMO meso's junction control leaves the busiest junctions less capacity "
    "than the core's spatial queues, and at the peak presets SUMO meso and micro gridlock "
    "(unfinished trips are censored at the horizon and stay in the means). On aguascalientes "
    "the queues sit upstream of SUMO's traffic lights, not at its priority junctions "
    "(`benchmarks/results/sumo_gridlock.md`: 95.6-99.6% of halting vehicles within 300 m "
    "upstream of a signal, 36-51% at one five-approach junction whose SUMO program gives its "
    "links 13-49% green where the core's plan gives 47%).",
    "- `sumo-meso-split` rows (`--green-split`): SUMO meso with the core's junction model, "
    "by SUMO's own options: no junction control (meso's default) and "
    "`--meso-tls-flow-penalty 1` (a signalised link discharges at its queue's headway divided "
    "by its green fraction in the running program, with no phases and no foes; the core "
    "discharges every approach at saturation flow times its green share, with no conflicts "
    "either). Compared with the signal-free `core`, whose model it is. It isolates the "
    "junction model: where it agrees and junction control does not (loaded aguascalientes), "
    "the gap is SUMO's right-of-way and phases; on monaco-peak it runs far faster than the "
    "core, because without junction control SUMO loses no capacity at its priority junctions "
    "while the core splits every junction's time (`benchmarks/results/sumo_gridlock.md`).",
    "- SUMO micro adds acceleration, turning speeds and priority rules to meso. Both teleport "
    "vehicles stuck for 300 s; `teleports` is SUMO's own count (meso's included: TraCI does "
    "not list them, so meso rows showed 0 before), teleported trips stay in the means.",
    "- `missed decisions`: junctions a learner passed without deciding (SUMO keeps its route "
    "there). In SUMO a learner decides at its next junction once it is within "
    "`LOOKAHEAD_STEPS` steps of driving (docs/sumo.md); what remains are chains of "
    "sub-metre core edges crossed faster than one decision per step (mostly right after "
    "insertion) and teleports.",
    "- Wall times come from one run on a 2-core machine shared with other engineers' jobs "
    "(see the load line above), of the episode's steps (not the reset, which starts SUMO). "
    "Every backend is driven the same way, with `advance()` and no observation (the two "
    "policies read none): the core skips its steps where no vehicle changes state, SUMO "
    "subscribes to edge state only when a policy reads it (congestion-aware). The SUMO "
    "wall times include relied's TraCI layer (subscriptions, decisions, reroutes) around "
    "libsumo.",
]


def eval_markdown(result: dict) -> str:
    lines = ["# A trained run evaluated in SUMO (micro and meso) beside the core", "",
             f"Command: `{result['command']}`", "",
             f"Run: `{result['train_command']}` (run folder {result['run_dir']}); held-out "
             f"seeds {result['seeds']}, {result['agents']} learners on {result['city']}.", ""]
    for backend, rep in result["backends"].items():
        cmp = rep["comparison"]
        carry = cmp["gain_carry_over"]
        lines += [f"## {backend}", "", f"SUMO mapping: {rep['sumo_network']}", "",
                  "| policy | mean tt core (s) | mean tt SUMO (s) | arrived core | arrived SUMO | "
                  "unfinished learner trips | teleports (all vehicles) | teleported learners | "
                  "removed | missed decisions |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, v in rep["policies"].items():
            c = rep["core_policies"][name]
            lines.append(f"| {name} | {c['mean_travel_time']:.1f} | "
                         f"{v['mean_travel_time']:.1f} | {c['arrival_rate']:.3f} | "
                         f"{v['arrival_rate']:.3f} | "
                         f"{(1 - v['arrival_rate']) * result['agents']:.1f} | "
                         f"{v['teleports']:.1f} | "
                         f"{v['teleported_learners']:.1f} | {v['removed_vehicles']:.1f} | "
                         f"{v['missed_decisions']:.1f} |")
        lines += ["", f"- ranking core: {' < '.join(cmp['ranking_core'])}",
                  f"- ranking {backend}: {' < '.join(cmp['ranking_backend'])}",
                  f"- ranking preserved: **{cmp['ranking_preserved']}**",
                  f"- gain over shortest-path: core {cmp['gain_core']:+.2%}, {backend} "
                  f"{cmp['gain_backend']:+.2%}; carry-over (gain in SUMO / gain in core): "
                  f"**{'n/a' if carry is None else f'{carry:.2f}'}**"]
        arrived = [v["arrival_rate"] for v in rep["policies"].values()]
        if min(arrived) < 0.95:
            lines.append(f"- {backend} gridlocks on this demand (learners arriving: "
                         f"{min(arrived):.0%}-{max(arrived):.0%}): its means are dominated by "
                         "trips censored at the horizon, so its gain says how many more trips "
                         "finish as much as how much faster they are")
        spread = [v["mean_travel_time"] for v in rep["core_policies"].values()]
        if abs(cmp["gain_core"]) < 0.01:
            lines.append(f"- the core's gain is below 1% (its policies span "
                         f"{max(spread) - min(spread):.1f} s of mean trip time): the ranking is "
                         "decided by differences below a second and the carry-over divides "
                         "by a near-zero gain; neither says much on this run")
        lines.append("")
    return "\n".join(lines + EVAL_READING)


#: How to read the evaluation tables.
EVAL_READING = [
    "## Reading", "",
    "- Figures are means over the held-out seeds (one episode per seed and policy; with two "
    "seeds no interval is claimed). The core "
    "and SUMO run the same scenarios: same learners' ODs and departures, same background "
    "vehicles (the core's route rule applied at insertion).",
    "- A trip SUMO has not finished at the horizon (gridlock) counts with its time up to the "
    "horizon (censored) in the mean; `unfinished learner trips` is their number per episode. "
    "SUMO's teleports (a vehicle stuck 300 s moved on) are counted and the teleported trips "
    "stay in the means; `removed` vehicles left SUMO without arriving.",
    "- `gain` is (shortest-path - policy) / shortest-path mean travel time in each simulator; "
    "the carry-over is gain in SUMO / gain in the core.", "",
]


def eval_run(run: Path, train_command: str, backend: str, seeds: list[int] | None) -> dict:
    """``relied eval RUN --backend <backend>`` (:func:`relied.rl.evaluate.evaluate_run`), merged
    into ``results/sumo_eval.json`` beside the other backend's report of the same run and seeds
    (one process per backend: libsumo runs one SUMO per process, and the two run at once)."""
    import relied.env.equilibrium as equilibrium
    from relied.rl.evaluate import evaluate_run, latest_run, load_run

    solve = equilibrium.solve_equilibrium
    solved: dict = {}

    def solve_once(net, scenario, *args):  # the core's eval and SUMO's share one solution
        key = (scenario.model_dump_json(), args)
        if key not in solved:
            solved[key] = solve(net, scenario, *args)
        return solved[key]

    equilibrium.solve_equilibrium = solve_once
    base = load_run(run)[0].seed + 1000
    seeds = seeds or [base, base + 1, base + 2]
    rep = evaluate_run(run, seeds, backend=backend)
    out = {"command": "benchmarks/backends.py --eval-run RUN --eval-backend sumo|sumo-meso "
                      f"--seeds {','.join(map(str, seeds))} --json (one process per backend)",
           "train_command": train_command, "run_dir": rep["run_dir"], "algo": rep["algo"],
           "city": rep["city"], "agents": rep["agents"], "seeds": seeds, "backends": {}}
    path = RESULTS / "sumo_eval.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("run_dir") == str(latest_run(run)) and old.get("seeds") == seeds:
            out["backends"] = old["backends"]
    out["backends"][backend] = rep
    out["backends"] = {b: out["backends"][b] for b in ("sumo", "sumo-meso")
                       if b in out["backends"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cities", nargs="+", default=["aguascalientes", "monaco"])
    ap.add_argument("--trips", type=int, default=1000)
    ap.add_argument("--window", type=float, default=600.0, help="departure window (s)")
    ap.add_argument("--free-flow-trips", type=int, default=60, help="trips of the free-flow "
                    "case (the first ODs of the --trips case, one departure every 30 s)")
    ap.add_argument("--presets", action="store_true", help="also the congested peak presets "
                    "(2,500 vehicles each; SUMO micro takes many minutes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nosignals-rows", choices=("free-flow", "all", "none"),
                    default="free-flow", help="cases with the diagnostic SUMO meso row with "
                    "its lights off")
    ap.add_argument("--eval-run", type=Path, help="evaluate this trained run on SUMO instead")
    ap.add_argument("--eval-backend", choices=("sumo", "sumo-meso"), default="sumo-meso")
    ap.add_argument("--seeds", help="held-out seeds of --eval-run, comma-separated (default: "
                    "the run's seed + 1000..1002)")
    ap.add_argument("--train-command", default="relied train --preset aguascalientes-peak "
                    "--algo reled --experts offline --demo-scenarios 2 --steps 30000 --seed 0 "
                    "--bound-every 5", help="how --eval-run was trained (for the results file)")
    ap.add_argument("--json", action="store_true", help="print one JSON object; write results")
    ap.add_argument("--sumo-signals", nargs="+", choices=tuple(SUFFIX), default=["netconvert"],
                    help="SUMO's traffic-light programs: netconvert's (rows sumo, sumo-meso) "
                    "and/or the core's plans (rows sumo+core-plans, sumo-meso+core-plans)")
    ap.add_argument("--loaded-only", action="store_true", help="skip the free-flow cases")
    ap.add_argument("--green-split", action="store_true", help="also SUMO meso with the core's "
                    "junction model (no junction control, signals as green-split headways: "
                    "rows sumo-meso-split<suffix>, goal 'core vs SUMO meso green-split')")
    ap.add_argument("--out", default="backends", help="stem of the results files written by "
                    "--json (results/<out>.json, .md)")
    ap.add_argument("--markdown-only", action="store_true", help="only rewrite results/*.md "
                    "from results/*.json (after a change to the tables' layout)")
    args = ap.parse_args()
    if args.markdown_only:  # re-render the results files from their JSON
        if (RESULTS / f"{args.out}.json").is_file():
            (RESULTS / f"{args.out}.md").write_text(
                markdown(json.loads((RESULTS / f"{args.out}.json").read_text())))
        if (RESULTS / "sumo_eval.json").is_file():
            (RESULTS / "sumo_eval.md").write_text(
                eval_markdown(json.loads((RESULTS / "sumo_eval.json").read_text())))
        return
    if args.eval_run is not None:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
        result = eval_run(args.eval_run, args.train_command, args.eval_backend, seeds)
        if args.json:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "sumo_eval.json").write_text(json.dumps(result, indent=2))
            (RESULTS / "sumo_eval.md").write_text(eval_markdown(result))
            print(json.dumps(result))
        else:
            print(eval_markdown(result))
        return
    cases = [(f"{c} free flow ({args.free_flow_trips} trips, one per 30 s)",
              free_flow_scenario(c, args.free_flow_trips, args.seed),
              args.nosignals_rows != "none") for c in args.cities] if not args.loaded_only else []
    cases += [(f"{c} {args.trips} trips", Scenario(city=c, n_agents=args.trips, seed=args.seed,
                                                   departure_window_s=args.window),
               args.nosignals_rows == "all") for c in args.cities]
    if args.presets:
        cases += [(f"{c}-peak", load_preset(f"{c}-peak").scenario,
                   args.nosignals_rows == "all") for c in args.cities]
    load_start = os.getloadavg()[0]
    result = {"command": "benchmarks/backends.py " + " ".join(sys.argv[1:]),
              "settings": {"trips": args.trips, "window_s": args.window, "seed": args.seed,
                           "presets": args.presets, "dt_s": 1.0, "horizon_s": 1800.0,
                           "sumo": "libsumo 1.28, Krauss defaults, time-to-teleport 300 s, "
                                   "meso with junction control, teleports from SUMO's "
                                   "statistics"
                                   + ("; sumo-meso-split: meso without junction control, "
                                      "--meso-tls-flow-penalty 1" if args.green_split else ""),
                           "core_signals": "core-signals: Scenario.signals (fixed-time, 90 s "
                                           "cycle, relied/env/signals.py)",
                           "netconvert_options": " ".join(NETCONVERT_OPTIONS),
                           "netconvert_turn_pass": " ".join(TURN_PASS_OPTIONS)
                           + " --connection-files <the core's turns netconvert left out>",
                           "sumo_options": " ".join(SIM_OPTIONS), "python":
                           platform.python_version(), "cpus": os.cpu_count()},
              "cases": [run_case(label, sc, nosig, tuple(args.sumo_signals), args.green_split)
                        for label, sc, nosig in cases]}
    result["load"] = f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}"
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"{args.out}.md").write_text(markdown(result))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
