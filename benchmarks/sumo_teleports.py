"""Why SUMO teleports more on monaco-peak when it runs the core's signal plans (issue 11).

For each case (``--cases``, default monaco-peak), each SUMO mode (micro, meso) and each policy
(shortest-path, congestion-aware), the backends' SUMO run (``relied.env.sumo.core``, same
options, time-to-teleport 300 s) on three traffic-light programs:

* ``netconvert``: netconvert's programs (the backends' default);
* ``core``: the core's fixed-time plans (``signal_plans="core"``, ``--sumo-signals core``);
* ``core, conflict-free links green``: the core's plans, except that every link netconvert
  keeps green in all its phases (a turn with no conflicting stream, e.g. a free right turn)
  stays green all cycle, as in netconvert's (a diagnostic: the core greens whole approaches).

Every teleport is read from SUMO's own warnings (``Teleporting vehicle ...; waited too long
(jam|yield|wrong lane), lane=...``): counted by reason, by the kind of junction at the end of
its lane (SUMO's type: priority, traffic_light, ...), by whether that lane lies within
``--upstream-m`` upstream of a traffic light (the queues that spill back from a signal:
``sumo_gridlock.attribution``), and per junction. Then, per SUMO traffic light, the green
share of each link under netconvert's program and the core's plan, where they differ.

    .venv/bin/python benchmarks/sumo_teleports.py --json   # writes results/sumo_teleports.*

``--markdown-only`` rewrites the ``.md`` from the JSON.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from sumo_gridlock import attribution, junctions

from relied.env.cities import city_source, load_city
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.sumo import load_sumo_network
from relied.env.sumo.core import SumoCore

RESULTS = Path(__file__).parent / "results"
POLICIES = ("shortest-path", "congestion-aware")
PROGRAMS = ("netconvert", "core", "core, conflict-free links green")
#: micro: ``...; waited too long (jam), lane='E_0', time=...``; meso: ``...; waited too long,
#: from edge 'E':0, time=...`` (no reason)
TELEPORT = re.compile(r"Teleporting vehicle '[^']+'; waited too long(?: \(([^)]+)\))?, "
                      r"(lane=|from edge )'([^']+)'")


class LoggedCore(SumoCore):
    """A SumoCore whose SUMO writes its warnings to ``log``; with ``free_links`` the core's
    programs keep green all cycle the links netconvert's programs never stop."""

    def __init__(self, *args, log: str, free_links: bool = False, **kw):
        self.log, self.free_links = log, free_links
        super().__init__(*args, **kw)

    def _command(self) -> list[str]:
        cmd = super()._command()
        cmd[cmd.index("--no-warnings") + 1] = "false"
        return cmd + ["--log", self.log]

    def _start(self) -> None:
        super()._start()
        if not self.free_links:
            return
        tl = self.traci.trafficlight
        for tls in tl.getIDList():
            logics = {lg.programID: lg for lg in tl.getAllProgramLogics(tls)}
            ours = logics.pop("core")
            theirs = next(iter(logics.values()))
            free = [all(p.state[i] == "G" for p in theirs.phases)
                    for i in range(len(theirs.phases[0].state))]
            phases = [tl.Phase(p.duration, "".join("G" if f else c
                                                   for f, c in zip(free, p.state, strict=True)))
                      for p in ours.phases]
            tl.setProgramLogic(tls, tl.Logic("core", 0, 0, phases))
            tl.setProgram(tls, "core")


@contextlib.contextmanager
def quiet_stderr():
    """SUMO echoes its warnings to the process's stderr: send them to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def lane_junction(edge: str, sn, kind: dict[str, str]) -> tuple[str, str]:
    """The junction at the end of an edge (an internal edge: its junction) and its type."""
    if edge.startswith(":"):
        junction = edge[1:].rsplit("_", 1)[0]
    else:
        s = sn.index.get(edge)
        junction = sn.edge_to[s] if s is not None else "?"
    return junction, kind.get(junction, "?")


def teleports(log: str, sn, kind: dict[str, str], near_tls: dict[int, str]) -> dict:
    """SUMO's teleport warnings in ``log``, counted."""
    by_reason, by_kind, by_place, by_junction = (collections.Counter() for _ in range(4))
    text = Path(log).read_text(errors="replace")
    for reason, form, where in TELEPORT.findall(text):
        edge = where.rsplit("_", 1)[0] if form == "lane=" else where
        junction, jtype = lane_junction(edge, sn, kind)
        by_reason[reason or "(none given)"] += 1
        by_kind[jtype] += 1
        s = sn.index.get(edge)
        tls = near_tls.get(s) if s is not None else None
        by_place["inside a junction" if edge.startswith(":") and tls is None else
                 "upstream of a traffic light" if tls else "elsewhere"] += 1
        by_junction[tls or junction] += 1
    return {"logged": sum(by_reason.values()), "reason": dict(by_reason),
            "junction_type": dict(by_kind), "place": dict(by_place),
            "junctions": by_junction.most_common(8)}


def run(core: LoggedCore, policy, sn, kind, near_tls) -> dict:
    with quiet_stderr():
        core.reset()
        start = time.perf_counter()
        while not core.done:
            core.advance(policy(core))
        wall = time.perf_counter() - start
        m = core.metrics()
        core.close()
    return {"mean_travel_time": m["mean_travel_time"], "arrival_rate": m["arrival_rate"],
            "teleports": m["teleports"], "wall_s": wall,
            **teleports(core.log, sn, kind, near_tls)}


def link_shares(core: SumoCore) -> list[dict]:
    """Per link of every SUMO traffic light: direction, and green share (G or g) with the
    states used under netconvert's program and the core's plan (needs a started core that
    runs the core's plans)."""
    tl, lane = core.traci.trafficlight, core.traci.lane
    out = []
    for tls in tl.getIDList():
        logics = {lg.programID: lg for lg in tl.getAllProgramLogics(tls)}
        ours = logics.pop("core")
        theirs = next(iter(logics.values()))
        for i, group in enumerate(tl.getControlledLinks(tls)):
            if not group:
                continue
            in_lane, out_lane, _ = group[0]
            direction = next((lk[6] for lk in lane.getLinks(in_lane) if lk[0] == out_lane), "?")
            row = {"tls": tls, "link": i, "from": in_lane, "to": out_lane,
                   "direction": direction}
            for name, logic in (("netconvert", theirs), ("core", ours)):
                cycle = sum(p.duration for p in logic.phases)
                row[name] = round(sum(p.duration for p in logic.phases
                                      if p.state[i] in "Gg") / cycle, 2)
                row[f"{name}_states"] = "".join(sorted({p.state[i] for p in logic.phases}))
            out.append(row)
    return out


def run_case(name: str, upstream_m: float, modes: list[str]) -> dict:
    scenario = load_preset(name).scenario
    net = load_city(scenario.city)
    sn = load_sumo_network(net, city_source(scenario.city).path)
    kind, _ = junctions(sn.path)
    near_tls = attribution(sn, kind, upstream_m)
    rows, links = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            for program in PROGRAMS:
                for policy in POLICIES:
                    core = LoggedCore(net, scenario.model_copy(
                        update={"signals": program != "netconvert"}), sn, mode,
                        signal_plans="netconvert" if program == "netconvert" else "core",
                        log=f"{tmp}/{mode}-{len(rows)}.log",
                        free_links=program.startswith("core, "))
                    row = {"mode": mode, "program": program, "policy": policy,
                           **run(core, make_policy(policy, scenario.seed), sn, kind,
                                 near_tls)}
                    rows.append(row)
                    print(f"{name} {mode:5s} {program:32s} {policy:16s} teleports "
                          f"{row['teleports']:.0f} {row['reason']} {row['place']}", flush=True)
        core = SumoCore(net, scenario.model_copy(update={"signals": True}), sn, "meso",
                        signal_plans="core")
        with quiet_stderr():
            core._start()
            links = link_shares(core)
            core.close()
    return {"case": name, "vehicles": scenario.n_vehicles, "upstream_m": upstream_m,
            "rows": rows, "links": links}


def markdown(result: dict) -> str:
    out = ["# SUMO teleports on the core's signal plans (issue 11)", "",
           f"Command: `{result['command']}`", "",
           "SUMO as in `benchmarks/backends.py` (time-to-teleport 300 s, its other options); "
           "each teleport read from SUMO's warning, which names its reason (`jam`: no room "
           "on the next lane; `yield`: waiting for priority foes at the junction; `wrong "
           "lane`: could not change to a lane that continues its route), and its lane. "
           "`upstream of a traffic light`: the lane lies within "
           f"{result['cases'][0]['upstream_m']:.0f} m upstream of a SUMO traffic light. "
           "`teleports` is SUMO's statistic (as in backends.md), the other counts are of its "
           "warnings (meso gives no reason; its teleports start inside junctions). "
           f"Load average (1 min) at the start and end: {result['load'][0]:.1f} -> "
           f"{result['load'][1]:.1f}.", ""]
    for case in result["cases"]:
        out += [f"## {case['case']} ({case['vehicles']} vehicles)", "",
                "| mode | programs | policy | mean tt (s) | arrived | teleports | jam | "
                "yield | wrong lane | at priority junctions | at traffic lights | upstream "
                "of a traffic light | inside a junction | elsewhere | top junctions "
                "(teleports) |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in case["rows"]:
            top = ", ".join(f"{j[:24]} {n}" for j, n in r["junctions"][:3])
            out.append(
                f"| {r['mode']} | {r['program']} | {r['policy']} | "
                f"{r['mean_travel_time']:.1f} | {r['arrival_rate']:.2f} | "
                f"{r['teleports']:.0f} | {r['reason'].get('jam', 0)} | "
                f"{r['reason'].get('yield', 0)} | {r['reason'].get('wrong lane', 0)} | "
                f"{r['junction_type'].get('priority', 0)} | "
                f"{r['junction_type'].get('traffic_light', 0)} | "
                f"{r['place'].get('upstream of a traffic light', 0)} | "
                f"{r['place'].get('inside a junction', 0)} | "
                f"{r['place'].get('elsewhere', 0)} | {top} |")
        differ = [lk for lk in case["links"] if abs(lk["netconvert"] - lk["core"]) >= 0.15
                  or lk["netconvert_states"].replace("y", "").replace("r", "")
                  != lk["core_states"].replace("y", "").replace("r", "")]
        free = [lk for lk in case["links"] if lk["netconvert_states"] == "G"]
        out += ["", f"Traffic-light links: {len(case['links'])}; green all cycle in "
                f"netconvert's programs (no conflicting stream): {len(free)}. Links whose green "
                "share differs by 0.15 or more, or that are priority green (`G`) in one and "
                "yield green (`g`) in the other:", "",
                "| traffic light | link | from -> to | direction | netconvert share (states) "
                "| core share (states) |", "|---|---:|---|---|---:|---:|"]
        for lk in differ:
            out.append(f"| {lk['tls'][:32]} | {lk['link']} | {lk['from']} -> {lk['to']} | "
                       f"{lk['direction']} | {lk['netconvert']:.2f} ({lk['netconvert_states']})"
                       f" | {lk['core']:.2f} ({lk['core_states']}) |")
    return "\n".join(out + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["monaco-peak"])
    ap.add_argument("--modes", nargs="+", default=["micro", "meso"])
    ap.add_argument("--upstream-m", type=float, default=300.0)
    ap.add_argument("--json", action="store_true",
                    help="write results/sumo_teleports.{json,md}")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    if args.markdown_only:
        result = json.loads((RESULTS / "sumo_teleports.json").read_text())
    else:
        load = [os.getloadavg()[0]]
        cases = [run_case(c, args.upstream_m, args.modes) for c in args.cases]
        load.append(os.getloadavg()[0])
        result = {"command": "benchmarks/sumo_teleports.py " + " ".join(sys.argv[1:]),
                  "load": load, "cases": cases}
        if args.json:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "sumo_teleports.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    if args.json or args.markdown_only:
        (RESULTS / "sumo_teleports.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
