"""What bound v6's lookahead adds to a critic check, at bound_validity's scale.

On ``aguascalientes-peak`` with 30 learners among 2,500 vehicles (``bound_validity.py``'s
scenario, untrained reled learners of seed 0), each candidate plan is checked twice with the
reference known, once with bound version 5 (the trial update) and once with version 6 (the
lookahead, v5's terms computed beside it), in fresh processes' caches alike. Counted per check:
whole-fleet simulations (``RoutingCore`` runs of the critic: executions, resimulations, greedy
runs), the lookahead's rollout episodes (the learners' training environment) and its minibatch
steps, and the wall time. Writes ``benchmarks/results/bound_v6_cost.{json,md}``.

    python benchmarks/bound_v6_cost.py [--seed 0] [--agents 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bound_validity import seed_case  # benchmarks/ is the script's folder

import relied.experts.critic as critic
import relied.rl.envs as envs
from relied.experts.bound import BoundConfig
from relied.rl.config import TrainConfig

RESULTS = Path(__file__).parent / "results"
PLANS = ("shortest-path", "congestion-aware", "equilibrium")


def counting(cls, counts: dict, key: str):
    """``cls`` that counts its constructions in ``counts[key]``."""

    class Counted(cls):
        def __init__(self, *a, **k):
            counts[key] += 1
            super().__init__(*a, **k)

    return Counted


def measure(version: int, seed: int, agents: int) -> dict:
    """Checks of every plan in :data:`PLANS` under ``version`` (this process's caches start
    empty: the reference's terms are measured inside the first check)."""
    torch.set_num_threads(1)
    counts = {"critic_simulations": 0, "rollout_episodes": 0}
    critic.RoutingCore = counting(critic.RoutingCore, counts, "critic_simulations")
    envs.RoutingCore = counting(envs.RoutingCore, counts, "rollout_episodes")
    bound = BoundConfig(gamma=TrainConfig().gamma, version=version)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        before = dict(counts)
        case = seed_case("aguascalientes-peak", seed, agents, 2, bound, Path(tmp))
        setup = {"wall_s": time.perf_counter() - t0} | {k: counts[k] - before[k] for k in counts}
        rows = []
        for name in PLANS:
            before, t0 = dict(counts), time.perf_counter()
            report, _ = critic.check_plan(case.net, case.sc, case.candidates[name], bound,
                                          case.untrained, reference=case.reference_bound,
                                          trial_update=case.trial)
            rows.append({"plan": name, "wall_s": time.perf_counter() - t0,
                         "accepted": report.accepted, "bound_accepted": report.bound_accepted}
                        | {k: counts[k] - before[k] for k in counts})
        steps = None
        if version >= 6:
            rollout = next(iter(case.trial._rollouts.values()))[0]
            cfg = case.trial.cfg
            steps = {"rollout_rows": int(len(rollout.action)),
                     "minibatch_steps": cfg.epochs * int(np.ceil(len(rollout.action)
                                                                 / cfg.minibatch)),
                     "trial_steps_v5": cfg.epochs}
        case.judge.folder.release()
    return {"version": version, "setup": setup, "checks": rows, "update": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:  # one version in this (fresh) process
        print(json.dumps(measure(args.one, args.seed, args.agents)))
        return
    out = {}
    for version in (5, 6):  # each in a fresh process: no cache carries over
        done = subprocess.run([sys.executable, __file__, "--one", str(version), "--seed",
                               str(args.seed), "--agents", str(args.agents)],
                              capture_output=True, text=True, check=True,
                              env=os.environ | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        out[str(version)] = json.loads(done.stdout.splitlines()[-1])
    load = os.getloadavg()[0]
    lines = [f"Cost of bound v6's lookahead per critic check (`python benchmarks/bound_v6_cost.py"
             f"`): aguascalientes-peak, {args.agents} learners among 2,500 vehicles, seed "
             f"{args.seed}, untrained reled learners, reference known (measured in the case's "
             f"set-up); load {load:.1f} at the end (2 shared cores).", "",
             "| plan | v5 (s) | v6 (s) | whole-fleet simulations v5 / v6 | lookahead rollout "
             "episodes | v6 verdict | v5 verdict |", "|---|---:|---:|---|---:|---|---|"]
    for a, b in zip(out["5"]["checks"], out["6"]["checks"], strict=True):
        lines.append(f"| {a['plan']} | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
                     f"{a['critic_simulations']} / {b['critic_simulations']} | "
                     f"{b['rollout_episodes']} | {b['accepted']} | {b['bound_accepted']} |")
    s5, s6, u = out["5"]["setup"], out["6"]["setup"], out["6"]["update"]
    lines += ["", f"Set-up (scenario, candidates, the reference's check): v5 {s5['wall_s']:.1f} s, "
              f"{s5['critic_simulations']} simulations; v6 {s6['wall_s']:.1f} s, "
              f"{s6['critic_simulations']} simulations and {s6['rollout_episodes']} rollout "
              f"episode(s) (shared by every plan judged under these learners).",
              f"Lookahead update: {u['rollout_rows']} rollout decision rows, "
              f"{u['minibatch_steps']} minibatch steps (PPO + expert loss) per plan, against the "
              f"v5 trial's {u['trial_steps_v5']} expert-only steps."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bound_v6_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "bound_v6_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
