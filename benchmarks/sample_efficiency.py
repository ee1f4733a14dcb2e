"""Sample efficiency and generalisation under congestion: every algorithm, same budget.

Trains each algorithm on each seed on a congested preset (default ``aguascalientes-peak``:
200 learners among 2,500 vehicles), then evaluates every final greedy policy on held-out trips
of the training city and on the other city's peak preset, beside the references
(shortest-path, congestion-aware, dynamic user equilibrium) on the same trips. Per algorithm,
mean and 95% bootstrap interval over seeds of:

* ``auc``: normalised area under the learning curve, the mean training return over the budget
  (on a common env-step grid);
* ``steps_to_ca``: env steps until the running mean of the training return reaches the
  congestion-aware reference's mean return on the held-out trips;
* held-out and other-city mean travel time, arrival rate, and the gap to the equilibrium.

Goals (issue 8): reled's ``auc`` above ippo's and leed's with non-overlapping intervals; reled
reaches the congestion-aware return in <= 1/3 of ippo's steps; reled ends within 5% of the
equilibrium travel time. The results file says which hold.

    python benchmarks/sample_efficiency.py [--seeds 0,1,2,3,4] [--steps 30000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.equilibrium import EquilibriumPolicy
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.rollout import run_episode
from relied.rl.config import TrainConfig
from relied.rl.policy import TrainedPolicy
from relied.rl.trainer import Trainer, read_metrics

RESULTS = Path(__file__).parent / "results"
ALGOS = "reled,reled-nofilter,reled-fixed,leed,ippo,mappo,bc"
REFS = ("shortest-path", "congestion-aware", "equilibrium")


def interval(values, reps: int = 2000) -> list[float] | None:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return None
    means = v[np.random.default_rng(0).integers(0, v.size, (reps, v.size))].mean(axis=1)
    return [float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def references(scenarios, net, eq_iterations: int) -> dict[str, dict[str, float]]:
    """Mean travel time, return and arrival of the references over ``scenarios``."""
    out = {}
    for name in REFS:
        rows = []
        for sc in scenarios:
            pol = (EquilibriumPolicy(iterations=eq_iterations) if name == "equilibrium"
                   else make_policy(name, sc.seed))
            rows.append(run_episode(RoutingCore(net, sc), pol).metrics)
        out[name] = {k: float(np.mean([r[k] for r in rows]))
                     for k in ("mean_travel_time", "mean_return", "arrival_rate")}
    return out


def greedy(model, scenarios, net) -> dict[str, float]:
    rows = [run_episode(RoutingCore(net, sc), TrainedPolicy(model)).metrics for sc in scenarios]
    return {k: float(np.mean([r[k] for r in rows]))
            for k in ("mean_travel_time", "mean_return", "arrival_rate")}


def steps_to(rows: list[dict], target: float, window: int = 3) -> float | None:
    ret = np.array([r["return"] for r in rows])
    for i in range(len(ret)):
        if ret[max(0, i - window + 1): i + 1].mean() >= target:
            return float(rows[i]["env_steps"])
    return None


def auc(rows: list[dict], budget: int, points: int = 50) -> float:
    """Mean training return over a common grid of the budget (interpolated, held at the
    first logged value before it)."""
    grid = np.linspace(budget / points, budget, points)
    x = [r["env_steps"] for r in rows]
    return float(np.interp(grid, x, [r["return"] for r in rows]).mean())


def train_one(job) -> dict:
    """Train one (algorithm, seed) and evaluate its greedy policy on the shared trips."""
    algo, seed, args, target, held, away = job
    torch.set_num_threads(1)
    net, other_net = load_city(held[0].city), load_city(away[0].city)
    cfg = TrainConfig(preset=args.preset, algo=algo, seed=seed, total_steps=args.steps,
                      demo_scenarios=args.demo_scenarios, heldout_seeds=0)
    trainer = Trainer.create(cfg, args.runs_dir, progress=False)
    summary = trainer.run()
    rows = read_metrics(trainer.run_dir)
    h, o = greedy(trainer.model, held, net), greedy(trainer.model, away, other_net)
    print(f"{algo} seed {seed}: auc {auc(rows, args.steps):.2f}, held-out "
          f"{h['mean_travel_time']:.1f} s ({h['arrival_rate']:.2f}), other "
          f"{o['mean_travel_time']:.1f} s, {summary['wall_s']:.0f} s", flush=True)
    return {"seed": seed, "run_dir": summary["run_dir"], "wall_s": summary["wall_s"],
            "auc": auc(rows, args.steps), "steps_to_ca": steps_to(rows, target),
            "heldout": h, "other": o, "curve": [(r["env_steps"], r["return"]) for r in rows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="aguascalientes-peak")
    p.add_argument("--other", default="monaco-peak", help="preset of the transfer city")
    p.add_argument("--algos", default=ALGOS)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--demo-scenarios", type=int, default=2)
    p.add_argument("--eval-seeds", default="1000,1001")
    p.add_argument("--eq-iterations", type=int, default=10)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("--workers", type=int, default=1, help="parallel training processes")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    preset, other = load_preset(args.preset).scenario, load_preset(args.other).scenario
    net, other_net = load_city(preset.city), load_city(other.city)
    held = [preset.model_copy(update={"seed": s}) for s in eval_seeds]
    away = [other.model_copy(update={"seed": s, "n_agents": preset.n_agents,
                                     "background_share": other.background_share})
            for s in eval_seeds]
    refs = {"heldout": references(held, net, args.eq_iterations),
            "other": references(away, other_net, args.eq_iterations)}
    print("references", json.dumps(refs), flush=True)
    target = refs["heldout"]["congestion-aware"]["mean_return"]
    jobs = [(algo, seed, args, target, held, away)
            for algo in args.algos.split(",") for seed in seeds]
    runs: dict[str, list[dict]] = {}
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            done = pool.map(train_one, jobs)
    else:
        done = [train_one(job) for job in jobs]
    for (algo, *_), run in zip(jobs, done, strict=True):
        runs.setdefault(algo, []).append(run)
    eq_h = refs["heldout"]["equilibrium"]["mean_travel_time"]
    table = {}
    for algo, rs in runs.items():
        table[algo] = {
            "auc": interval([r["auc"] for r in rs]),
            "steps_to_ca": interval([r["steps_to_ca"] for r in rs]),
            "reached_ca": sum(r["steps_to_ca"] is not None for r in rs),
            "heldout_travel_time": interval([r["heldout"]["mean_travel_time"] for r in rs]),
            "heldout_arrival": interval([r["heldout"]["arrival_rate"] for r in rs]),
            "other_travel_time": interval([r["other"]["mean_travel_time"] for r in rs]),
            "other_arrival": interval([r["other"]["arrival_rate"] for r in rs]),
            "gap_to_equilibrium": interval([r["heldout"]["mean_travel_time"] / eq_h - 1
                                            for r in rs]),
        }
    goals = {}
    if {"reled", "ippo", "leed"} <= set(table):
        r, i, le = table["reled"]["auc"], table["ippo"]["auc"], table["leed"]["auc"]
        goals["auc_above_ippo_and_leed_disjoint"] = r[1] > i[2] and r[1] > le[2]
        s_r, s_i = table["reled"]["steps_to_ca"], table["ippo"]["steps_to_ca"]
        goals["ca_in_third_of_ippo_steps"] = bool(s_r and s_i and s_r[0] <= s_i[0] / 3)
        goals["within_5pct_of_equilibrium"] = table["reled"]["gap_to_equilibrium"][0] <= 0.05
    out = {"benchmark": "sample_efficiency", "preset": args.preset, "other": args.other,
           "seeds": seeds, "eval_seeds": eval_seeds, "steps": args.steps,
           "demo_scenarios": args.demo_scenarios, "eq_iterations": args.eq_iterations,
           "python": platform.python_version(),
           "machine": f"{platform.machine()}, 2 cores shared with other work",
           "wall_s": time.perf_counter() - start, "references": refs, "table": table,
           "goals": goals, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sample_efficiency.json").write_text(json.dumps(out, indent=1))
    md = markdown(out)
    (RESULTS / "sample_efficiency.md").write_text(md)
    plot(runs, RESULTS / "sample_efficiency.png", args.preset)
    print(json.dumps(out) if args.json else md)


def markdown(out: dict) -> str:
    def ci(v, f=1.0, d=1):
        return "n/a" if v is None else f"{v[0] * f:.{d}f} [{v[1] * f:.{d}f}, {v[2] * f:.{d}f}]"

    refs = out["references"]
    lines = [f"Preset `{out['preset']}` ({len(out['seeds'])} seeds, {out['steps']:,} env steps "
             f"each); held-out trips seeds {out['eval_seeds']}, other city `{out['other']}`. "
             "Mean [95% bootstrap interval] over seeds. Command: "
             "`python benchmarks/sample_efficiency.py`", "",
             "| policy | held-out tt (s) | arrival | other city tt (s) | gap to equilibrium | "
             "AUC (mean return) | steps to congestion-aware | runs reaching |",
             "|" + "---|" * 8]
    for name in REFS:
        h, o = refs["heldout"][name], refs["other"][name]
        lines.append(f"| {name} | {h['mean_travel_time']:.1f} | {h['arrival_rate']:.2f} | "
                     f"{o['mean_travel_time']:.1f} | | | | |")
    for algo, t in out["table"].items():
        lines.append(f"| {algo} | {ci(t['heldout_travel_time'])} | "
                     f"{ci(t['heldout_arrival'], d=2)} | {ci(t['other_travel_time'])} | "
                     f"{ci(t['gap_to_equilibrium'], 100)}% | {ci(t['auc'], d=2)} | "
                     f"{ci(t['steps_to_ca'], d=0)} | {t['reached_ca']}/{len(out['seeds'])} |")
    lines += ["", "Goals: " + (", ".join(f"{k}: {v}" for k, v in out["goals"].items())
                               or "n/a")]
    return "\n".join(lines) + "\n"


def plot(runs: dict, path: Path, preset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algo, rs in runs.items():
        grid = np.linspace(0, min(r["curve"][-1][0] for r in rs), 40)[1:]
        curves = np.array([np.interp(grid, *zip(*r["curve"], strict=True)) for r in rs])
        ax.plot(grid, curves.mean(0), label=algo)
        ax.fill_between(grid, curves.min(0), curves.max(0), alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return (mean, min-max over seeds)")
    ax.set_title(f"{preset}: learning curves")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
