"""Does bound v6's verdict on a fleet sample agree with its verdict on the whole fleet?

Scenario: ``scale_case(n)`` of benchmarks/train_throughput.py (default 1,000 learners, 12,500
vehicles, below ``TeamConfig.sim_vehicles``, so the whole fleet can be judged too). The
critic judges each candidate plan twice under the same learners (the seeded untrained
learners a new training run of the case starts from, as ``relied experts generate`` judges;
bound version 6, their lookahead): on the whole fleet (``sim_vehicles`` None) and on the
team's fleet sample for each ``--sim-vehicles`` (relied.env.sample: capacities and stuck time
scaled; the planned learners always in). Both teams judge the same agents (the
``TeamConfig.demo_agents`` subset) against their own reference (the free-flow shortest paths,
on the whole fleet or on the sample).

Candidate plans (routes of every learner; the judged agents' routes are what differ):

* shortest-path: the free-flow shortest paths (the reference itself: rejected by
  construction, v6's check being strict),
* congestion-aware: the routes the learners drove under the congestion-aware policy in the
  whole fleet,
* perturbed: congestion-aware for a seeded half of the judged agents, shortest paths for the
  others; perturbed-10: the same for a seeded tenth (near the reference),
* all-switch: every judged agent off its shortest path (its congestion-aware route, or where
  that is the same, a second path: ``critic.alternative_routes``), the others on theirs.

Per plan and setting: the verdict, v6's forecast drift of the plan and of the reference (s per
decision) and their ratio, v5's verdict on the same terms (``bound_accepted``), the return
check, the plan's mean travel time, wall time.

    .venv/bin/python benchmarks/expert_scale_agreement.py --sizes 1000 --seeds 0,1 \
        --sim-vehicles 1500,3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import code_version, provenance, scale_case  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PLANS = ("shortest-path", "congestion-aware", "perturbed", "perturbed-10", "all-switch")


def candidate_plans(net, scenario, judged: list[int], seed: int = 0) -> dict[str, list]:
    """Node routes of every learner for each candidate plan (module docstring)."""
    from relied.experts.critic import alternative_routes, policy_routes

    sp = policy_routes(net, scenario, "shortest-path")
    ca = policy_routes(net, scenario, "congestion-aware")
    rng = np.random.default_rng(seed)

    def mixed(share: float) -> list:
        some = set(rng.choice(judged, size=round(len(judged) * share), replace=False).tolist())
        return [ca[i] if i in some else sp[i] for i in range(len(sp))]

    switch = alternative_routes(net, scenario, sp, "congestion-aware")
    keep = set(judged)
    return {"shortest-path": sp, "congestion-aware": ca, "perturbed": mixed(0.5),
            "perturbed-10": mixed(0.1),
            "all-switch": [switch[i] if i in keep else sp[i] for i in range(len(sp))]}


def judge(team, routes: list[list[int]]) -> dict:
    """The critic's report on ``routes`` (node routes of every learner) as ``team.check``
    judges a plan: on the team's simulation (the sample's learners when there is one)."""
    from relied.experts.critic import check_plan

    learners = team.sim_learners
    start = time.perf_counter()
    report, _ = check_plan(team.sim_net, team.sim_scenario, team._simulated(routes),
                           team.config.bound, learners.policy_probs, team._simulated_groups(),
                           team.baseline, previous_probs=learners.previous_probs,
                           reference=team.reference,
                           agents=team._simulated_agents(team.judged),
                           trial_update=learners.trial_update)
    return {"accepted": report.accepted, "lookahead_drift_s": report.lookahead_drift_s,
            "reference_lookahead_drift_s": report.reference_lookahead_drift_s,
            "ratio": (report.lookahead_drift_s / report.reference_lookahead_drift_s
                      if report.reference_lookahead_drift_s else None),
            "bound_accepted": report.bound_accepted, "too_slow": report.too_slow,
            "mean_travel_time": report.mean_travel_time,
            "plan_mean_return": report.plan_mean_return,
            "baseline_mean_return": report.baseline_mean_return,
            "reason": report.reason, "wall_s": round(time.perf_counter() - start, 1)}


def agreement_case(n: int, seed: int, sim_vehicles: list[int], report: dict, save) -> dict:
    """Every candidate plan judged on the whole fleet and on each sample of the case with
    scenario (and learners') seed ``seed``; the row."""
    from relied.agents.clients import make_client
    from relied.agents.team import ExpertTeam, TeamConfig
    from relied.agents.view import CityView
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.rl.config import TrainConfig
    from relied.rl.trial import fresh_learners

    case = {k: v for k, v in scale_case(n).items() if k != "n_envs"}
    cfg = TrainConfig(**case, seed=seed)
    scenario = cfg.scenario()
    net = load_city(scenario.city)
    core = RoutingCore(net, scenario)
    learners = fresh_learners(cfg, core)
    view = CityView(net)
    row = {"agents": n, "seed": seed, "vehicles": core.scenario.n_vehicles,
           "learners": learners.source,
           "settings": []}
    report["rows"].append(row)
    plans = None
    for sim in [None, *sim_vehicles]:
        start = time.perf_counter()
        team = ExpertTeam(core, view, make_client("offline", net, view),
                          TeamConfig(sim_vehicles=sim), learners)
        setup = time.perf_counter() - start
        if plans is None:
            plans = candidate_plans(net, core.scenario, team.sampled)
        setting = {"sim_vehicles": sim,
                   "simulated": team.sim_scenario.n_vehicles,
                   "factor": team.sample.info.factor if team.sample else 1.0,
                   "judged": len(team.sampled), "bound_version":
                   learners.bound_version(team.config.bound), "setup_s": round(setup, 1),
                   "plans": {}}
        row["settings"].append(setting)
        for name in PLANS:
            setting["plans"][name] = judge(team, plans[name])
            print(json.dumps({"sim_vehicles": sim, "plan": name,
                              **setting["plans"][name]}), file=sys.stderr)
            save()
    return row


def markdown(report: dict) -> str:
    lines = [f"# Bound v6 on a fleet sample vs the whole fleet (`{report['command']}`, "
             f"{provenance(report)})", "",
             (__doc__ or "").split("\n\n", 1)[1].split("    .venv")[0].strip(), ""]
    for r in report["rows"]:
        lines += [f"## {r['agents']:,} learners, {r['vehicles']:,} vehicles, seed "
                  f"{r.get('seed', 0)} (learners: {r['learners']})", "",
                  "| plan | simulated (factor) | verdict | v6 drift plan / reference (s) | "
                  "ratio | v5 verdict | too slow | plan mean travel time (s) | check wall (s) |",
                  "|" + "---|" * 9]
        for s in r["settings"]:
            for name, p in s["plans"].items():
                ratio = "-" if p["ratio"] is None else f"{p['ratio']:.3f}"
                drift = ("-" if p["lookahead_drift_s"] is None else
                         f"{p['lookahead_drift_s']:.4f} / {p['reference_lookahead_drift_s']:.4f}")
                lines.append(
                    f"| {name} | {s['simulated']:,} ({s['factor']:.3g}) | "
                    f"{'accepted' if p['accepted'] else 'rejected'} | {drift} | {ratio} | "
                    f"{'accepted' if p['bound_accepted'] else 'rejected'} | {p['too_slow']} | "
                    f"{p['mean_travel_time']:.1f} | {p['wall_s']} |")
        whole = r["settings"][0]["plans"] if r["settings"] else {}
        lines.append("")
        for s in r["settings"][1:]:
            same = [n for n in s["plans"] if n in whole
                    and s["plans"][n]["accepted"] == whole[n]["accepted"]]
            lines.append(f"Sample of {s['simulated']:,} vehicles (factor {s['factor']:.3g}, "
                         f"setup {s['setup_s']} s): v6's verdict agrees with the whole fleet's "
                         f"on {len(same)} of {len(s['plans'])} plans"
                         + (f" ({', '.join(same)})" if same else "") + ".")
        if r["settings"]:
            lines.append(f"Whole fleet setup (reference, its lookahead): "
                         f"{r['settings'][0]['setup_s']} s.")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000", help="learner counts")
    p.add_argument("--sim-vehicles", default="1500",
                   help="sample sizes (TeamConfig.sim_vehicles) judged beside the whole fleet")
    p.add_argument("--seeds", default="0", help="scenario (and learners') seeds")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--name", default="expert_scale_agreement", help="stem of the results files")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    report = {"command": " ".join(["python", "benchmarks/expert_scale_agreement.py",
                                   *sys.argv[1:]]),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_before": [round(x, 2) for x in os.getloadavg()], "code": code_version(),
              "rows": []}

    def save() -> None:  # after every plan: a stopped run keeps what it measured
        report["load_after"] = [round(x, 2) for x in os.getloadavg()]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / f"{args.name}.md").write_text(markdown(report))

    for n in (int(s) for s in args.sizes.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            agreement_case(n, seed, [int(s) for s in args.sim_vehicles.split(",") if s],
                           report, save)
    save()
    print(json.dumps(report) if args.json else markdown(report))


if __name__ == "__main__":
    main()
