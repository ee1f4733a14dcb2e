"""What the learners' trial update (bound version 5) adds to the critic, per check and per run.

On a preset (default ``aguascalientes-peak``: 200 learners among 2,500 vehicles), with the
untrained learners a new ``relied train --algo reled --seed 0`` run starts from:

* per critic check: the wall time of ``check_plan`` on the free-flow shortest paths and on the
  congestion-aware routes, the reference known (as in the expert team's chat), with the trial
  update (version 5) and without (version 4's terms, the same policy); fresh caches each time;
* per training run: the expert team's demonstrations of the run's demonstrated scenarios
  (``demo_scenarios``, one batch each, the offline planner, no cache), judged under those
  learners with and without the trial: wall time, critic checks (rounds) and verdicts. Training
  iterations are unchanged unless ``--bound-every``/``--regen-every`` ask for more judgements.

    python benchmarks/trial_cost.py [--preset aguascalientes-peak] [--demo-scenarios 2] [--json]

Results: ``benchmarks/results/trial_cost.{md,json}``. Timings on 2 shared cores: the 1-minute
load is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from relied.agents.generate import generate_demonstrations
from relied.agents.team import TeamConfig
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.experts import critic
from relied.experts.bound import BOUND_VERSION, BoundConfig
from relied.experts.demos import load_batch
from relied.experts.learners import Learners
from relied.rl.config import TrainConfig
from relied.rl.trial import fresh_learners

RESULTS = Path(__file__).parent / "results"


def _fresh_caches() -> None:
    for memo in (critic._CACHE, critic._GREEDY, critic._SCALES):
        memo.clear()


def check_times(net, sc, learners: Learners, cfg: BoundConfig) -> list[dict]:
    """Wall time of one ``check_plan`` per plan, with and without the trial update."""
    rows = []
    plans = {kind: critic.policy_routes(net, sc, kind)
             for kind in ("shortest-path", "congestion-aware")}
    for trial in (learners.trial_update, None):
        _fresh_caches()
        ref = critic.reference_bound(net, sc, cfg, learners.policy_probs,
                                     trial_update=trial)
        for name, routes in plans.items():
            _fresh_caches()
            for kind in ("shortest-path", "congestion-aware"):  # not part of a check
                critic.policy_routes(net, sc, kind)
            critic.reference_scales(net, sc, cfg, learners.policy_probs, trial_update=trial)
            start = time.perf_counter()
            report, _ = critic.check_plan(net, sc, routes, cfg, learners.policy_probs,
                                          reference=ref, trial_update=trial)
            rows.append({"plan": name, "trial": trial is not None,
                         "wall_s": time.perf_counter() - start, "accepted": report.accepted,
                         "plan_bound": report.plan_bound, "reference_bound": ref})
            print(f"check {name} trial={trial is not None}: {rows[-1]['wall_s']:.1f} s",
                  flush=True)
    return rows


def team_times(cfg: TrainConfig, seeds: list[int], learners: Learners) -> list[dict]:
    """The team's demonstrations of ``seeds`` with and without the trial update."""
    rows = []
    for trial in (True, False):
        judged = learners if trial else Learners(learners.policy_probs, source="no trial")
        for seed in seeds:
            _fresh_caches()
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                paths = generate_demonstrations(cfg.scenario(seed=seed), Path(tmp),
                                                learners=judged,
                                                config=TeamConfig(), use_cache=False)
                wall = time.perf_counter() - start
                meta = load_batch(paths[0])[1]
            rows.append({"seed": seed, "trial": trial, "wall_s": wall, "rounds": meta.rounds,
                         "accepted": meta.accepted,
                         "accepted_round": meta.extra.get("accepted_round"),
                         "bound_version": meta.extra["bound"]["version"]})
            print(f"team seed {seed} trial={trial}: {wall:.1f} s, {meta.rounds} rounds, "
                  f"accepted={meta.accepted}", flush=True)
    return rows


def markdown(out: dict) -> str:
    lines = [f"Preset `{out['preset']}`, untrained reled learners (seed 0), offline planner, "
             f"bound version {out['bound_version']} with the trial vs version 4's terms. "
             "Command: `python benchmarks/trial_cost.py`. Commit "
             f"{(out['commit'] or 'unknown')[:12]}, load {out['load_1min'][0]:.1f} -> "
             f"{out['load_1min'][1]:.1f} (2 shared cores).", "",
             "Per critic check (`check_plan`, reference known):", "",
             "| plan | with trial (s) | without (s) | added (s) | verdict with / without |",
             "|---|---|---|---|---|"]
    for plan in dict.fromkeys(r["plan"] for r in out["checks"]):
        a, b = (next(r for r in out["checks"] if r["plan"] == plan and r["trial"] is t)
                for t in (True, False))
        lines.append(f"| {plan} | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
                     f"{a['wall_s'] - b['wall_s']:+.1f} | "
                     f"{'accepted' if a['accepted'] else 'rejected'} / "
                     f"{'accepted' if b['accepted'] else 'rejected'} |")
    lines += ["", "Per training run (the team's demonstrations of its demonstrated scenarios):",
              "", "| scenario seed | with trial (s, rounds, accepted) | without (s, rounds, "
              "accepted) |", "|---|---|---|"]
    for seed in dict.fromkeys(r["seed"] for r in out["team"]):
        a, b = (next(r for r in out["team"] if r["seed"] == seed and r["trial"] is t)
                for t in (True, False))
        lines.append(f"| {seed} | {a['wall_s']:.1f}, {a['rounds']}, {a['accepted']} | "
                     f"{b['wall_s']:.1f}, {b['rounds']}, {b['accepted']} |")
    t = {k: sum(r["wall_s"] for r in out["team"] if r["trial"] is k) for k in (True, False)}
    lines += ["", f"Demonstrations of one run: {t[True]:.1f} s with the trial, {t[False]:.1f} s "
              f"without ({t[True] - t[False]:+.1f} s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="aguascalientes-peak")
    p.add_argument("--demo-scenarios", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "trial_cost.json")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    cfg = TrainConfig(preset=args.preset, algo="reled", seed=0)
    net = load_city(cfg.city)
    sc = cfg.scenario().resolve(net)  # the run's first demonstrated scenario
    learners = fresh_learners(cfg, RoutingCore(net, sc))
    checks = check_times(net, sc, learners, BoundConfig(gamma=cfg.gamma))
    team = team_times(cfg, cfg.pool_seeds()[:args.demo_scenarios], learners)
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    out = {"benchmark": "trial_cost", "preset": args.preset, "bound_version": BOUND_VERSION,
           "commit": commit, "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "checks": checks, "team": team}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    args.out.with_suffix(".md").write_text(markdown(out))
    print(json.dumps(out) if args.json else markdown(out))


if __name__ == "__main__":
    main()
