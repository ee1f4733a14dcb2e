"""The expert team at scale: one demonstration batch (offline planner) at 1,000 and 10,000
learners, with and without the demonstrated subset (``TeamConfig.demo_agents``).

Scenario: ``benchmarks/train_throughput.py``'s ``scale_case(n)``, the congested preset
aguascalientes-peak scaled to N learners on north-bayreuth (92% background, departures spread
so the load per metre of road is the preset's). Rows: 1,000 learners with ``demo_agents`` at its
default (500) and without subsetting (all 1,000 planned), 10,000 learners at the default.

The sample (``relied.agents.team.demo_sample``): with ``demo_agents = 500`` and the default
``group_size = 50`` the fleet, in agent-id order, is cut into 10 contiguous blocks and each block
gives the same share of its agents (500 / N), drawn with a generator seeded by the scenario seed
and the plan variant; each block's sample is one planner group, split further until its prompt
fits the model (170 groups of about 3 with the offline planner's budget at 1,000 learners), so
model calls per round are bounded by the sample, not by N. The other learners drive free-flow
shortest paths.

Above ``TeamConfig.sim_vehicles`` vehicles (default 15,000: the 10,000-learner fleet of
125,000 vehicles, not the 1,000-learner one of 12,500) every simulation of the batch runs on
one seeded fleet sample of about that many vehicles holding the planned learners, on the
network with saturation flow, storage and capacity scaled by the sample's share
(``relied.env.sample``); rows report the vehicles simulated and that factor. ``--accuracy``
measures what the sample costs in accuracy instead: the learners' current behaviour (free-flow
shortest paths) in the whole fleet against samples of ``--factors`` (seeds ``--seeds``) as the
team runs them (capacities and stuck time scaled), with the fleet's stuck time (the sample
before its stuck time was scaled) and without the capacity scaling; ``--presets`` adds
presets' fleets (``expert_scale_sample_stuck.md``; the earlier ``expert_scale_sample*.md``
predate the stuck time's scaling).

Per row (each in its own subprocess, so peak RSS is the row's own; a row that runs past
``--timeout`` is stopped and reports the phases, model calls, simulations and peak RSS it got to):
model calls, whole-fleet simulations (every traffic-core episode run in the row: forecast,
reference routes, executions, resimulations), planner groups, critic rounds, agents
demonstrated, whether the critic accepted, and the wall time split into

* forecast: the traffic forecast the planners route on (one simulation),
* setup: the team's baseline execution, the learners' shortest paths and the reference bound
  (the critic's scale: an execution and its resimulations),
* planning: the planner calls (team chat time minus the critic's checks),
* critic: the critic's checks (validation, the plan's execution and resimulations),
* execution: the demonstration saved (the plan's execution and the shortest-path baseline
  are the critic's and the team's, reused; a batch stores the decision rows the critic's
  execution kept, so nothing is simulated again).

Whole-fleet simulations are also counted per phase (forecast / setup / critic / execution),
and the demonstration file's size (``.npz``, store format 2: decision rows) is reported.

    .venv/bin/python benchmarks/expert_scale.py --json
    .venv/bin/python benchmarks/expert_scale.py --sizes 1000 --timeout 600
    .venv/bin/python benchmarks/expert_scale.py --full-max 0 --timeout 1800  # sampled rows only
    .venv/bin/python benchmarks/expert_scale.py --full-max 0 --timeout 2700 --bound-version 6 \
        --name expert_scale_v6  # the critic's lookahead under a new run's untrained learners
    .venv/bin/python benchmarks/expert_scale.py --accuracy --sizes 1000,10000 \
        --factors 0.03,0.06,0.12,0.24 --seeds 0,1,2 --presets aguascalientes-peak \
        --name expert_scale_sample_stuck

A stopped row counts the phases it was in up to the stop (the planning of a chat stopped in
the critic is its time so far minus the critic's checks).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import code_version, provenance, scale_case  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PHASES = ("forecast", "setup", "planning", "critic", "execution")


class Status:
    """Phase times (``clock``), counts (with the peak RSS so far) and the phase running,
    written to a file at every change, so a stopped row still tells where its time went, what
    it got through and the memory it had reached."""

    def __init__(self, path: Path):
        self.path, self.clock, self.counts = path, {}, {}
        self.running: list[tuple[str, float]] = []  # (phase, its start: time.time())

    def write(self) -> None:
        extra = ({"running": self.running[-1][0], "since": self.running} if self.running
                 else {})
        counts = {**self.counts, "peak_rss_gib": _peak_rss_gib()}
        self.path.write_text(json.dumps({**self.clock, **extra, "counts": counts}))


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _timed(owner, name: str, phase: str, status: Status) -> None:
    """Wrap ``owner.name`` so that its wall time adds to ``status.clock[phase]``."""
    real = getattr(owner, name)

    def begin() -> float:
        status.running.append((phase, time.time()))
        status.write()
        return time.perf_counter()

    def end(start: float) -> None:
        status.running.pop()
        status.clock[phase] = status.clock.get(phase, 0.0) + time.perf_counter() - start
        status.write()

    def wrapped(*a, **kw):
        start = begin()
        try:
            return real(*a, **kw)
        finally:
            end(start)

    async def awrapped(*a, **kw):  # the team's chat is a coroutine: time its awaiting
        start = begin()
        try:
            return await real(*a, **kw)
        finally:
            end(start)

    setattr(owner, name, awrapped if inspect.iscoroutinefunction(real) else wrapped)


def _counted(owner, name: str, key: str, status: Status, first_step: bool = False) -> None:
    """Count calls of ``owner.name`` in ``status.counts[key]`` (``first_step``: only calls on
    a core at step 0, i.e. traffic-core episodes, also counted per running phase as
    ``<key>_<phase>``)."""
    real = getattr(owner, name)

    def count(obj) -> None:
        if not first_step or obj.t == 0:
            status.counts[key] = status.counts.get(key, 0) + 1
            if first_step:
                phase = status.running[-1][0] if status.running else "other"
                status.counts[f"{key}_{phase}"] = status.counts.get(f"{key}_{phase}", 0) + 1
            status.write()

    def wrapped(self, *a, **kw):
        count(self)
        return real(self, *a, **kw)

    async def awrapped(self, *a, **kw):
        count(self)
        return await real(self, *a, **kw)

    setattr(owner, name, awrapped if inspect.iscoroutinefunction(real) else wrapped)


def run_case(n: int, demo_agents: int | None, path: Path, bound_version: int | None = None
             ) -> dict:
    """One batch in this process; the row. ``bound_version``: the critic judges with it under
    the untrained learners a new training run of the case starts from (as ``relied experts
    generate`` does; version 6: their lookahead); None: without learners (version 4's
    stand-in, the earlier rows)."""
    import asyncio

    from relied.agents import generate
    from relied.agents.offline import OfflinePlannerClient
    from relied.agents.team import ExpertTeam, TeamConfig
    from relied.env.core import RoutingCore
    from relied.experts.demos import load_batch
    from relied.rl.config import TrainConfig

    case = {k: v for k, v in scale_case(n).items() if k != "n_envs"}
    scenario = TrainConfig(**case).scenario()
    learners = None
    if bound_version is not None:
        from relied.env.cities import load_city
        from relied.rl.trial import fresh_learners

        learners = fresh_learners(TrainConfig(**case), RoutingCore(load_city(scenario.city),
                                                                   scenario))
    status = Status(path)
    clock = status.clock
    _counted(OfflinePlannerClient, "create", "model_calls", status)
    _counted(RoutingCore, "advance", "simulations", status, first_step=True)
    for owner, name, phase in ((generate, "_forecast", "forecast"),
                               (ExpertTeam, "__init__", "setup"), (ExpertTeam, "check", "critic"),
                               (ExpertTeam, "run", "team_run"), (generate, "execute", "execution"),
                               (generate, "save_batch", "execution")):
        _timed(owner, name, phase, status)
    config = TeamConfig(demo_agents=demo_agents)
    if bound_version is not None:
        config = config.model_copy(update={"bound": config.bound.model_copy(
            update={"version": bound_version})})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        [res] = asyncio.run(generate.agenerate([(scenario, 0)], Path(tmp), "offline",
                                               config=config, use_cache=False,
                                               learners=learners))
        wall = time.perf_counter() - start
        meta = load_batch(Path(res.path))[1] if res.path else None
        demo_bytes = Path(res.path).with_suffix(".npz").stat().st_size if res.path else None
    clock["planning"] = clock.pop("team_run", 0.0) - clock.get("critic", 0.0)
    demonstrated = (len(meta.demo_agents) if meta and meta.demo_agents is not None else n)
    return {"agents": n, "vehicles": scenario.n_vehicles, "demo_agents": demo_agents,
            "demonstrated": demonstrated, "model_calls": res.model_calls,
            **{k: v for k, v in status.counts.items() if k.startswith("simulations")},
            "demo_file_mb": None if demo_bytes is None else round(demo_bytes / 2**20, 2),
            "bound_executions": meta.extra["bound"]["executions"] if meta else None,
            "sim_vehicles": config.sim_vehicles,
            "simulated_vehicles": (scenario.n_vehicles if meta is None or meta.fleet_sample is None
                                   else len(meta.fleet_sample.learners)
                                   + len(meta.fleet_sample.background)),
            "sample_factor": (meta.fleet_sample.factor if meta and meta.fleet_sample else 1.0),
            "groups": meta.extra.get("groups") if meta else None, "rounds": res.rounds,
            "accepted": res.accepted, "fallback": res.fallback, "wall_s": round(wall, 1),
            "bound_version": res.bound_version,
            "learners": None if learners is None else learners.source,
            **{f"{k}_s": round(clock.get(k, 0.0), 1) for k in PHASES},
            "peak_rss_gib": _peak_rss_gib()}


def _drive(net, scenario) -> tuple[np.ndarray, float, float]:
    """Each learner's travel time (s) on its free-flow shortest path, the entries forced by
    the stuck time per simulated vehicle, and the run's wall."""
    from relied.env.core import RoutingCore
    from relied.env.forecast import drive
    from relied.env.policies import ShortestPathPolicy

    start = time.perf_counter()
    core = RoutingCore(net, scenario)
    drive(core, ShortestPathPolicy())
    return (core.travel_times(), core.forced / scenario.n_vehicles,
            time.perf_counter() - start)


def storage_rounding(net, scenario, full: np.ndarray, factors: list[float]) -> list[dict]:
    """What the sample's rounded storages alone do: the whole fleet on the storage a sample of
    each factor effectively has (``ceil(storage x factor) / factor``: an edge admits a vehicle
    while fewer than ``ceil(storage x factor)`` are on it, at least one), against the fleet;
    and that room in all against the fleet's (``room_ratio``)."""
    import dataclasses

    out = []
    for factor in factors:
        room = np.ceil(net.storage * factor)
        times, forced, wall = _drive(dataclasses.replace(
            net, name=f"{net.name}~storage@{factor:g}", storage=room / factor), scenario)
        out.append({"factor": factor,
                    "room_ratio": float(room.sum() / (factor * np.ceil(net.storage).sum())),
                    "mean_s": float(times.mean()), "error": float(times.mean() / full.mean() - 1),
                    "forced_per_vehicle": forced, "wall_s": round(wall, 1)})
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def accuracy_case(case: str, factors: list[float], seeds: list[int],
                  storage: bool = False) -> dict:
    """The learners' current behaviour (untrained: the free-flow shortest paths, the
    critic's reference) in the whole fleet and in fleet samples of each factor: as sampled
    now (capacities and the stuck time scaled), with the fleet's stuck time (the sample before
    its stuck time scaled: ``SampleInfo.stuck_time_scaled=False``) and on the unscaled
    network; mean travel times of the simulated learners, of the demonstrated subset and, for
    the like-for-like error, of the same learners in the whole fleet. ``case``: a learner count
    (``scale_case(n)``, the team's demonstrated subset kept in every sample) or a preset's
    name (no subset kept: its learners are sampled like the background)."""
    import dataclasses

    from relied.agents.team import TeamConfig, demo_sample
    from relied.env.cities import load_city
    from relied.env.presets import load_preset
    from relied.env.sample import FleetSample, sample_fleet
    from relied.rl.config import TrainConfig

    config = TeamConfig()
    if case.isdigit():
        spec = {k: v for k, v in scale_case(int(case)).items() if k != "n_envs"}
        base = TrainConfig(**spec).scenario()
    else:
        base = load_preset(case).scenario
    net = load_city(base.city)
    scenario = base.resolve(net)
    n = scenario.n_agents
    demo = ([a for b in demo_sample(n, config, scenario.seed) for a in b] if case.isdigit()
            else [])
    full, forced, wall = _drive(net, scenario)
    row = {"case": case, "agents": n, "vehicles": scenario.n_vehicles,
           "full_mean_s": float(full.mean()),
           "full_demo_mean_s": float(full[demo].mean()) if demo else None,
           "full_forced_per_vehicle": forced, "full_wall_s": round(wall, 1),
           "default_sim_vehicles": config.sim_vehicles, "samples": []}
    if storage:
        row["storage_rounding"] = storage_rounding(net, scenario, full, factors)
    for factor in factors:
        for seed in seeds:
            sample = sample_fleet(net, scenario, round(factor * scenario.n_vehicles), demo,
                                  seed=seed)
            ids = sample.learners
            at = sample.positions(demo)
            scaled, scaled_forced, wall = _drive(sample.net, sample.scenario)
            before = FleetSample.of(net, scenario, sample.info.model_copy(
                update={"stuck_time_scaled": False}))
            fleet_stuck, before_forced, _ = _drive(before.net, before.scenario)
            plain, _, plain_wall = _drive(
                dataclasses.replace(net, name=f"{net.name}@unscaled"), sample.scenario)
            row["samples"].append({
                "factor": round(sample.info.factor, 4), "seed": seed,
                "vehicles": sample.scenario.n_vehicles, "learners": int(ids.size),
                "stuck_time_s": sample.scenario.stuck_time_s,
                "full_same_mean_s": float(full[ids].mean()),
                "mean_s": float(scaled.mean()),
                "demo_mean_s": float(scaled[at].mean()) if demo else None,
                "fleet_stuck_mean_s": float(fleet_stuck.mean()),
                "fleet_stuck_demo_mean_s": float(fleet_stuck[at].mean()) if demo else None,
                "unscaled_mean_s": float(plain.mean()),
                "unscaled_demo_mean_s": float(plain[at].mean()) if demo else None,
                "forced_per_vehicle": scaled_forced,
                "fleet_stuck_forced_per_vehicle": before_forced,
                "wall_s": round(wall, 1), "unscaled_wall_s": round(plain_wall, 1)})
            print(json.dumps(row["samples"][-1]), file=sys.stderr)
    return row


def accuracy_markdown(report: dict) -> str:
    lines = [f"# Fleet samples vs the whole fleet (`{report['command']}`, "
             f"{provenance(report)})", "",
             "The learners' current behaviour (untrained: free-flow shortest paths, the "
             "critic's reference) simulated with the whole fleet and on fleet samples "
             "(`relied.env.sample.sample_fleet`: a systematic sample over departure order, "
             "seeded; for a learner count, `scale_case(n)` of benchmarks/train_throughput.py "
             "with the demonstrated subset of `TeamConfig.demo_agents` always in; for a preset, "
             "no subset kept) on the network with saturation flow, storage and capacity times "
             "the sample's factor and the stuck time divided by it ('scaled', the sample as "
             "the team runs it), the same with the fleet's stuck time ('fleet stuck time': "
             "the sample before the stuck time was scaled) and on the unscaled network "
             "('unscaled'). Mean travel times (s) of the simulated learners against the same "
             "learners' mean in the whole fleet (relative error), and of the demonstrated "
             "subset against its whole-fleet mean. Forced: entries forced by the stuck time "
             "per simulated vehicle (whole fleet in the heading). The default setting "
             "(`TeamConfig.sim_vehicles`) is the factor sim_vehicles / vehicles.", ""]

    def err(v: float | None, ref: float | None) -> str:
        return "-" if v is None or ref is None else f"{100 * (v / ref - 1):+.1f}%"

    for r in report["rows"]:
        name = (f"{r['agents']:,} learners" if str(r.get("case", r["agents"])).isdigit()
                else f"{r['case']} ({r['agents']:,} learners)")
        demo = (f", demonstrated subset {r['full_demo_mean_s']:.1f} s"
                if r.get("full_demo_mean_s") is not None else "")
        forced = r.get("full_forced_per_vehicle")
        lines += [f"## {name}, {r['vehicles']:,} vehicles (whole fleet: {r['full_wall_s']} s "
                  f"per simulation; all learners {r['full_mean_s']:.1f} s{demo}"
                  + (f"; forced {forced:.3f} per vehicle" if forced is not None else "")
                  + ")", "",
                  "| factor | seed | vehicles | learners | stuck time (s) | same learners, "
                  "whole fleet | scaled | error | fleet stuck time | error | unscaled | error "
                  "| demo subset scaled | error | demo subset, fleet stuck time | error | "
                  "forced (scaled / fleet stuck time) | wall scaled (s) |", "|" + "---|" * 18]
        for x in r["samples"]:
            same, dref = x["full_same_mean_s"], r.get("full_demo_mean_s")

            def fig(v: float | None) -> str:
                return "-" if v is None else f"{v:.1f}"

            lines.append(
                f"| {x['factor']:.3f} | {x['seed']} | {x['vehicles']:,} | {x['learners']:,} | "
                f"{x.get('stuck_time_s', 60.0):.0f} | {same:.1f} | {x['mean_s']:.1f} | "
                f"{err(x['mean_s'], same)} | {fig(x.get('fleet_stuck_mean_s'))} | "
                f"{err(x.get('fleet_stuck_mean_s'), same)} | {x['unscaled_mean_s']:.1f} | "
                f"{err(x['unscaled_mean_s'], same)} | {fig(x['demo_mean_s'])} | "
                f"{err(x['demo_mean_s'], dref)} | {fig(x.get('fleet_stuck_demo_mean_s'))} | "
                f"{err(x.get('fleet_stuck_demo_mean_s'), dref)} | "
                f"{x.get('forced_per_vehicle', float('nan')):.3f} / "
                f"{x.get('fleet_stuck_forced_per_vehicle', float('nan')):.3f} | "
                f"{x['wall_s']} |")
        errors = [x["mean_s"] / x["full_same_mean_s"] - 1 for x in r["samples"]]
        before = [x["fleet_stuck_mean_s"] / x["full_same_mean_s"] - 1 for x in r["samples"]
                  if x.get("fleet_stuck_mean_s") is not None]
        if r.get("storage_rounding"):
            lines += ["", "The whole fleet on the storage a sample of each factor effectively "
                      "has (`ceil(storage x factor) / factor`; room: that storage in all over "
                      "the fleet's):", "",
                      "| factor | room | all learners (s) | error | forced per vehicle |",
                      "|---|---|---|---|---|"]
            lines += [f"| {x['factor']:.3f} | {x['room_ratio']:.3f} | {x['mean_s']:.1f} | "
                      f"{100 * x['error']:+.1f}% | {x['forced_per_vehicle']:.3f} |"
                      for x in r["storage_rounding"]]
        if errors:
            lines += ["", f"Mean error over the samples: scaled {100 * np.mean(errors):+.1f}% "
                      f"(mean absolute {100 * np.mean(np.abs(errors)):.1f}%)"
                      + (f", fleet stuck time {100 * np.mean(before):+.1f}% (mean absolute "
                         f"{100 * np.mean(np.abs(before)):.1f}%)" if before else "") + "."]
        lines.append("")
    return "\n".join(lines)


def _vehicles(n: int) -> int:
    from relied.rl.config import TrainConfig

    return TrainConfig(**{k: v for k, v in scale_case(n).items() if k != "n_envs"}
                       ).scenario().n_vehicles


def markdown(report: dict) -> str:
    lines = [f"# Expert team at scale (`{report['command']}`, {provenance(report)})", "",
             "One demonstration batch (offline planner, default team settings) on "
             "`scale_case(n)` of benchmarks/train_throughput.py (aguascalientes-peak scaled to "
             "N learners on north-bayreuth). demo_agents: the most learners planned and "
             "demonstrated (`TeamConfig.demo_agents`; all: no subset).", "",
             "Simulations: whole-fleet traffic-core episodes, in all and per phase (forecast / "
             "setup / critic / execution). Vol_ext resimulations: the critic's shared pool per "
             "check (`BoundConfig.executions`; above demo_agents capped by "
             "`TeamConfig.scale_executions`). Demo file: the batch's `.npz` (decision rows). "
             "Simulated: the vehicles each simulation runs (`TeamConfig.sim_vehicles`: a "
             "larger fleet is simulated as a seeded sample of about that many, holding the "
             "planned learners, on the network with capacities times the factor; "
             "relied.env.sample), and that factor.", "",
             "Bound: the version the critic judged with (`--bound-version`: under the untrained "
             "learners a new training run of the case starts from, as `relied experts "
             "generate` judges; 6: their lookahead, rolled out on the fleet sample where there "
             "is one; without it no learners: version 4's stand-in).", "",
             "| learners | vehicles | simulated (factor) | demo_agents | demonstrated | bound | "
             "model calls | simulations "
             "(forecast / setup / critic / execution) | Vol_ext resimulations | planner groups "
             "| rounds | accepted | wall (s) | forecast / setup / planning / critic / execution "
             "(s) | demo file (MB) | peak RSS (GiB) | load 1-min after | note |",
             "|" + "---|" * 18]
    for r in report["rows"]:
        phases = " / ".join(f"{r.get(f'{k}_s', 0):.1f}" for k in PHASES)
        sims = " / ".join(str(r.get(f"simulations_{k}", 0))
                          for k in ("forecast", "setup", "critic", "execution"))
        lines.append(
            f"| {r['agents']:,} | {r.get('vehicles', 0):,} | "
            f"{r.get('simulated_vehicles', 0) or 0:,} ({r.get('sample_factor', '')}) | "
            f"{r['demo_agents'] or 'all'} | "
            f"{r.get('demonstrated', '')} | {r.get('bound_version', '')} | "
            f"{r.get('model_calls', '')} | "
            f"{r.get('simulations', '')} ({sims}) | {r.get('bound_executions', '')} | "
            f"{r.get('groups', '')} "
            f"| {r.get('rounds', '')} | {r.get('accepted', '')} | {r.get('wall_s', '')} | "
            f"{phases} | {r.get('demo_file_mb', '')} | {r.get('peak_rss_gib', '')} | "
            f"{r['load_after'][0]:.2f} | {r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="learner counts")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per row")
    p.add_argument("--full-max", type=int, default=1000,
                   help="fleets up to this size also get a row without subsetting (0: none)")
    p.add_argument("--memory-gib", type=float, default=14.0,
                   help="address-space limit per row (a row past it fails, not the machine)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--name", default="expert_scale",
                   help="stem of the results files (<out>/<name>.md and .json)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--accuracy", action="store_true",
                   help="compare fleet samples with the whole fleet instead (default name: "
                   "expert_scale_sample)")
    p.add_argument("--factors", default="0.12,0.24",
                   help="--accuracy: sample factors (share of the vehicles simulated)")
    p.add_argument("--seeds", default="0,1", help="--accuracy: sample seeds")
    p.add_argument("--storage-rounding", action="store_true",
                   help="--accuracy: also the whole fleet on each factor's rounded storage")
    p.add_argument("--presets", default="",
                   help="--accuracy: presets measured too (comma-separated; no subset kept)")
    p.add_argument("--bound-version", type=int, choices=(5, 6),
                   help="judge with this bound version under the untrained learners of a new "
                   "training run of the case (default: no learners, version 4's stand-in)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: "n,demo_agents,status"
    args = p.parse_args()
    if args.accuracy:
        name = "expert_scale_sample" if args.name == "expert_scale" else args.name
        report = {"command": " ".join(["python", "benchmarks/expert_scale.py",
                                       *sys.argv[1:]]),
                  "cpus": os.cpu_count(), "python": platform.python_version(),
                  "load_before": [round(x, 2) for x in os.getloadavg()],
                  "code": code_version(), "rows": []}
        cases = [c for c in args.sizes.split(",") + args.presets.split(",") if c]
        for case in cases:
            report["rows"].append(accuracy_case(case, [float(f) for f in
                                                       args.factors.split(",")],
                                                [int(x) for x in args.seeds.split(",")],
                                                args.storage_rounding))
            report["load_after"] = [round(x, 2) for x in os.getloadavg()]
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
            (args.out / f"{name}.md").write_text(accuracy_markdown(report))
        print(json.dumps(report) if args.json else accuracy_markdown(report))
        return
    if args.case:
        n, demo, status = args.case.split(",")
        limit = int(args.memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_case(int(n), None if demo == "all" else int(demo), Path(status),
                                  args.bound_version)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(n, 500) for n in sizes] + [(n, "all") for n in sizes if n <= args.full_max]
    report = {"command": " ".join(["python", "benchmarks/expert_scale.py", *sys.argv[1:]]),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_before": [round(x, 2) for x in os.getloadavg()], "code": code_version(),
              "rows": []}
    for n, demo in sorted(cases, key=lambda c: (c[0], c[1] == "all")):
        with tempfile.NamedTemporaryFile(suffix=".json") as st:
            cmd = [sys.executable, __file__, "--case", f"{n},{demo},{st.name}",
                   "--memory-gib", str(args.memory_gib),
                   *(["--bound-version", str(args.bound_version)] if args.bound_version
                     else [])]
            env = {**os.environ, "RELIED_EXPERT_CACHE": tempfile.mkdtemp()}
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=args.timeout)
                out = proc.stdout.strip().splitlines()
                row = json.loads(out[-1]) if proc.returncode == 0 and out else {
                    "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
            except subprocess.TimeoutExpired:
                row = {"error": f"stopped after {args.timeout:.0f} s"}
            if "error" in row:
                done = json.loads(Path(st.name).read_text() or "{}")
                row |= done.pop("counts", {})
                if "running" in done:
                    row["error"] += f" (in {done.pop('running')})"
                for phase, since in done.pop("since", []):  # phases cut short count too
                    done[phase] = done.get(phase, 0.0) + time.time() - since
                if "team_run" in done:  # planning: the chat's time (so far) minus checks
                    done["planning"] = done.pop("team_run") - done.get("critic", 0.0)
                row |= {"agents": n, "vehicles": _vehicles(n),
                        "demo_agents": None if demo == "all" else demo,
                        "wall_s": round(time.perf_counter() - start, 1),
                        **{f"{k}_s": round(v, 1) for k, v in done.items()}}
        row["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report["rows"].append(row)
        print(json.dumps(row), file=sys.stderr)
        args.out.mkdir(parents=True, exist_ok=True)  # after every row: a stopped run keeps them
        (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / f"{args.name}.md").write_text(markdown(report))
    print(json.dumps(report) if args.json else markdown(report))


if __name__ == "__main__":
    main()
