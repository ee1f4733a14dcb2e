"""Why SUMO jams on loaded aguascalientes (issue 11): where its vehicles wait, how its signal
plans compare with the core's, and what each SUMO meso option changes.

For each case (aguascalientes 1,000 trips and the peak preset, shortest-path; ``--cases``):

* the backends' SUMO meso run (``relied.env.sumo.core``: junction control, time-to-teleport
  300 s) with halting vehicles sampled every 60 s on every SUMO edge, attributed to the
  traffic-light junction within ``--upstream-m`` downstream of the edge (the queues that spill
  back from a signal) or else to the junction at the edge's end, split by whether that
  junction makes some of the edge's links yield (a priority junction with foes);
* SUMO meso with other documented options (lights off, no junction control, junction control
  for saturated links only, the signals as SUMO's green-split penalties, a shorter
  time-to-teleport) and, on the core's signal plans (``signal_plans="core"``), the steps from
  SUMO's junction model to the core's: permissive turns given priority, the lights as
  green-split headways with and without junction control at the other junctions (the last is
  the backends' ``sumo-meso-split+core-plans``): mean trip time, arrivals, teleports (SUMO's
  statistics);
* per SUMO traffic-light program: the green share of its links against the core's plan for
  the same approaches (``relied.env.signals``).

    .venv/bin/python benchmarks/sumo_gridlock.py --json   # writes results/sumo_gridlock.{json,md}

``--markdown-only`` rewrites the ``.md`` from the JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import relied.env.sumo.signals as sumo_signals
from relied.env.cities import city_source, load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.scenario import Scenario
from relied.env.signals import signal_plan
from relied.env.sumo import load_sumo_network
from relied.env.sumo.core import SumoCore

RESULTS = Path(__file__).parent / "results"

@dataclass(frozen=True)
class Variant:
    """One SUMO meso run: options dropped from and added to the backends' command, whose
    programs run (netconvert's or the core's plans), and whether permissive turns of the
    core's plans give way (``g``) or have priority (``G``, as the core has no conflicts)."""

    label: str
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    plans: str = "netconvert"
    yields: bool = True


NO_CONTROL = ("--meso-junction-control",)
FLOW_PENALTY = ("--meso-tls-flow-penalty", "1")
VARIANTS: tuple[Variant, ...] = (
    Variant("as in backends.py (junction control, teleport 300 s)"),
    Variant("lights off (priority rules everywhere)", add=("--tls.all-off", "true")),
    Variant("no junction control", drop=NO_CONTROL),
    Variant("junction control for saturated links only",
            add=("--meso-junction-control.limited", "true")),
    Variant("signals as green-split penalties, junction control for saturated links only",
            add=("--meso-junction-control.limited", "true", "--meso-tls-penalty", "1",
                 *FLOW_PENALTY)),
    Variant("time-to-teleport 90 s (one signal cycle)", drop=("--time-to-teleport",),
            add=("--time-to-teleport", "90")),
    Variant("time-to-teleport 60 s (the core's stuck_time_s)", drop=("--time-to-teleport",),
            add=("--time-to-teleport", "60")),
    Variant("core's plans (junction control)", plans="core"),
    Variant("core's plans, permissive turns with priority (G)", plans="core", yields=False),
    Variant("core's plans as green-split headways, junction control elsewhere", plans="core",
            add=FLOW_PENALTY),
    Variant("core's plans as green-split headways, no junction control (sumo-meso-split)",
            plans="core", drop=NO_CONTROL, add=FLOW_PENALTY),
    Variant("core's plans as green-split headways + mean red wait, no junction control",
            plans="core", drop=NO_CONTROL, add=(*FLOW_PENALTY, "--meso-tls-penalty", "1")),
)


class VariantCore(SumoCore):
    """A SumoCore whose SUMO command drops and adds options (one variant)."""

    def __init__(self, *args, drop: tuple[str, ...] = (), add: tuple[str, ...] = (),
                 yields: bool = True, **kw):
        self.drop, self.add, self.yields = drop, add, yields
        super().__init__(*args, **kw)

    def _start(self) -> None:
        keep = sumo_signals.YIELD_DIRECTIONS
        if not self.yields:  # the core's plans with every green link ``G``
            sumo_signals.YIELD_DIRECTIONS = frozenset()
        try:
            super()._start()
        finally:
            sumo_signals.YIELD_DIRECTIONS = keep

    def _command(self) -> list[str]:
        cmd, out, i = super()._command(), [], 0
        while i < len(cmd):
            if cmd[i] in self.drop:
                i += 2
                continue
            out.append(cmd[i])
            i += 1
        return out + list(self.add)


def junctions(path: Path) -> tuple[dict[str, str], set[str]]:
    """Type of each SUMO junction, and the incoming SUMO edges whose links yield somewhere."""
    kind, yielding = {}, set()
    for _, el in ET.iterparse(path):
        if el.tag == "junction" and el.get("type") != "internal":
            kind[el.get("id")] = el.get("type", "")
        elif el.tag == "connection" and not el.get("from", "").startswith(":") \
                and el.get("state") in ("m", "w", "s"):
            yielding.add(el.get("from"))
        if el.tag in ("junction", "connection"):
            el.clear()
    return kind, yielding


def attribution(sn, kind: dict[str, str], upstream_m: float) -> dict[int, str]:
    """Per SUMO edge: the traffic light within ``upstream_m`` downstream (by connections),
    else ''."""
    tls = {i for i, to in enumerate(sn.edge_to) if kind.get(to, "").startswith("traffic_light")}
    out: dict[int, str] = {}
    for t in tls:
        dist = {t: 0.0}
        todo = [t]
        while todo:
            s = todo.pop()
            for p in sn.pred[s]:
                d = dist[s] + float(sn.length_m[p])
                if d <= upstream_m and d < dist.get(p, np.inf) and p not in tls:
                    dist[p] = d
                    todo.append(p)
        for s, d in dist.items():
            if s not in out or d < out[s][1]:
                out[s] = (sn.edge_to[t], d)
    return {s: j for s, (j, _) in out.items()}


def short(junction: str) -> str:
    return junction if len(junction) <= 34 else junction[:31] + "..."


def run(core: SumoCore, policy, sample: bool) -> tuple[dict, collections.Counter, float]:
    core.reset()
    halting: collections.Counter = collections.Counter()
    start = time.perf_counter()
    while not core.done:
        core.advance(policy(core))
        if sample and core.t % 60 == 0:
            for i, sid in enumerate(core.sumo_net.edge_ids):
                h = core.traci.edge.getLastStepHaltingNumber(sid)
                if h:
                    halting[i] += h
    wall = time.perf_counter() - start
    m = core.metrics()
    core.close()
    return m, halting, wall


def plan_comparison(net, sn) -> list[dict]:
    """Per SUMO program: its links' green shares (non-red time / cycle) against the core's
    plan for the approaches (core edges) they leave."""
    programs, links = {}, []
    for _, el in ET.iterparse(sn.path):
        if el.tag == "tlLogic":
            programs[el.get("id")] = [(float(p.get("duration")), p.get("state"))
                                      for p in el.findall("phase")]
        elif el.tag == "connection" and el.get("tl") and not el.get("from").startswith(":"):
            links.append((el.get("tl"), int(el.get("linkIndex")), el.get("from")))
    plan = signal_plan(net)
    rows = []
    for tl, phases in programs.items():
        cycle = sum(d for d, _ in phases)
        sumo_share, core_share = [], []
        for t, j, frm in links:
            if t != tl or frm not in sn.index:
                continue
            sumo_share.append(sum(d for d, s in phases if s[j] not in "ru") / cycle)
            e = int(sn.sumo_to_core[sn.index[frm]])
            if e >= 0:
                core_share.append(float(plan.green_s[e] / plan.cycle_s)
                                  if plan.controlled[e] else 1.0)
        rows.append({"program": tl, "phases": len(phases), "cycle_s": cycle,
                     "sumo_green_share": [round(min(sumo_share), 2), round(max(sumo_share), 2)],
                     "core_green_share": [round(min(core_share), 2), round(max(core_share), 2)]})
    return rows


def case_scenario(name: str) -> Scenario:
    if name.endswith("-peak"):
        return load_preset(name).scenario
    city, trips = name.rsplit("-", 1)
    return Scenario(city=city, n_agents=int(trips), seed=0, departure_window_s=600.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["aguascalientes-1000", "aguascalientes-peak"])
    ap.add_argument("--policy", default="shortest-path")
    ap.add_argument("--upstream-m", type=float, default=300.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object; write results")
    ap.add_argument("--markdown-only", action="store_true",
                    help="only rewrite results/sumo_gridlock.md from its JSON")
    args = ap.parse_args()
    if args.markdown_only:
        (RESULTS / "sumo_gridlock.md").write_text(
            markdown(json.loads((RESULTS / "sumo_gridlock.json").read_text())))
        return
    load = os.getloadavg()[0]
    result = {"command": "benchmarks/sumo_gridlock.py " + " ".join(sys.argv[1:]),
              "policy": args.policy, "upstream_m": args.upstream_m, "cases": []}
    for name in args.cases:
        sc = case_scenario(name)
        net = load_city(sc.city)
        sn = load_sumo_network(net, city_source(sc.city).path)
        kind, yielding = junctions(sn.path)
        near = attribution(sn, kind, args.upstream_m)
        case = {"case": name, "variants": [], "plans": plan_comparison(net, sn),
                "core": {}}
        for label, signals in (("core", False), ("core-signals", True)):
            core = RoutingCore(net, sc.model_copy(update={"signals": signals}))
            core.reset()
            pol = make_policy(args.policy)
            while not core.done:
                core.advance(pol(core))
            case["core"][label] = core.metrics()["mean_travel_time"]
        for v in VARIANTS:
            core = VariantCore(net, sc.model_copy(update={"signals": True})
                               if v.plans == "core" else sc, sn,
                               mode="meso", drop=v.drop, add=v.add, yields=v.yields,
                               signal_plans=v.plans)
            m, halting, wall = run(core, make_policy(args.policy), sample=v == VARIANTS[0])
            case["variants"].append({"variant": v.label, "drop": list(v.drop),
                                     "add": list(v.add), "plans": v.plans, "yields": v.yields,
                                     "mean_travel_time": m["mean_travel_time"],
                                     "arrival_rate": m["arrival_rate"],
                                     "teleports": m["teleports"], "wall_s": wall})
            if halting:
                total = sum(halting.values())
                by_tls: collections.Counter = collections.Counter()
                by_end: collections.Counter = collections.Counter()
                for s, h in halting.items():
                    if s in near:
                        by_tls[near[s]] += h
                    else:
                        end = sn.edge_to[s]
                        by_end[f"{kind.get(end, '?')}"
                               f"{' (edge yields)' if sn.edge_ids[s] in yielding else ''}"] += h
                case["halting"] = {
                    "samples": total,
                    "within_upstream_of_traffic_lights": {short(j): h for j, h in
                                                          by_tls.most_common()},
                    "elsewhere_by_end_junction": dict(by_end.most_common())}
        result["cases"].append(case)
    result["load"] = f"{load:.1f} -> {os.getloadavg()[0]:.1f}"
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sumo_gridlock.json").write_text(json.dumps(result, indent=2))
        (RESULTS / "sumo_gridlock.md").write_text(markdown(result))
        print(json.dumps(result))
    else:
        print(markdown(result))


def markdown(result: dict) -> str:
    lines = ["# SUMO meso's junction model against the core's: why SUMO jams on loaded "
             "aguascalientes and runs free without junction control on monaco-peak", "",
             f"Command: `{result['command']}` (policy {result['policy']}; load "
             f"{result['load']}; SUMO meso; one run per variant).", ""]
    for case in result["cases"]:
        core = case.get("core", {})
        lines += [f"## {case['case']}", ""]
        if core:
            lines += [f"The core on the same demand: {core['core']:.1f} s (`core`, its default "
                      f"junction model: green-split discharge, no signals), "
                      f"{core['core-signals']:.1f} s (`core-signals`).", ""]
        lines += ["| SUMO meso variant | mean tt (s) | arrived | teleports | wall (s) | "
                  "core / variant | core-signals / variant |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for v in case["variants"]:
            ratios = (f"{core['core'] / v['mean_travel_time']:.2f} | "
                      f"{core['core-signals'] / v['mean_travel_time']:.2f}" if core else " | ")
            lines.append(f"| {v['variant']} | {v['mean_travel_time']:.1f} | "
                         f"{v['arrival_rate']:.3f} | {v['teleports']:.0f} | {v['wall_s']:.1f} "
                         f"| {ratios} |")
        h = case.get("halting")
        if h:
            near = sum(h["within_upstream_of_traffic_lights"].values())
            lines += ["", f"Halting vehicles (sampled every 60 s, {h['samples']} vehicle-samples "
                      f"in the first variant): {near / h['samples']:.1%} queue within "
                      f"{result['upstream_m']:.0f} m upstream of a traffic light:", ""]
            lines += [f"- {j}: {n} ({n / h['samples']:.0%})"
                      for j, n in h["within_upstream_of_traffic_lights"].items()]
            lines += ["", "elsewhere, by the junction at the edge's end:", ""]
            lines += [f"- {j}: {n} ({n / h['samples']:.0%})"
                      for j, n in h["elsewhere_by_end_junction"].items()]
        lines += ["", "Signal programs: green share (non-red time / cycle) of the links of each "
                  "SUMO program and of the core's plan for the same approaches:", "",
                  "| SUMO program | phases | cycle (s) | SUMO green share | core green share |",
                  "|---|---:|---:|---|---|"]
        for p in case["plans"]:
            lines.append(f"| {short(p['program'])} | {p['phases']} | {p['cycle_s']:.0f} | "
                         f"{p['sumo_green_share'][0]:.2f}-{p['sumo_green_share'][1]:.2f} | "
                         f"{p['core_green_share'][0]:.2f}-{p['core_green_share'][1]:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
