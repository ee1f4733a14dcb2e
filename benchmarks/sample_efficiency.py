"""Sample efficiency and generalisation: reled vs leed vs ippo vs bc, same step budget.

Trains every algorithm on every seed (aguascalientes, 20 agents by default), evaluates each
final greedy policy on held-out scenario seeds of the training city and on monaco, and writes
``benchmarks/results/sample_efficiency.{md,json,png}``. Goals (reported, not asserted):
reled reaches IPPO's final training return within a third of IPPO's steps, and its held-out
mean travel time is within 10% of the congestion-aware reference's.

    .venv/bin/python benchmarks/sample_efficiency.py            # ~10 min on 2 cores
    .venv/bin/python benchmarks/sample_efficiency.py --steps 3000 --seeds 0 --algos reled,ippo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from relied.rl.config import TrainConfig
from relied.rl.evaluate import compare_runs, evaluate_run
from relied.rl.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--city", default="aguascalientes")
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--steps", type=int, default=12_000, help="env-step budget per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--algos", default="reled,reled:weight=return,leed,ippo,bc",
                   help="comma-separated; 'algo:field=value:...' for an ablation")
    p.add_argument("--experts", default="offline")
    p.add_argument("--share", default="all", help="none | group | all (see docs/training.md)")
    p.add_argument("--train-seeds", type=int, default=8, help="OD scenarios cycled in training")
    p.add_argument("--eval-city", default="monaco")
    p.add_argument("--eval-seeds", default="1000,1001,1002")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = args.runs_dir / stamp
    runs: dict[str, list[Path]] = {}
    evals: dict[str, dict[str, list[dict]]] = {}
    start = time.perf_counter()
    for spec in args.algos.split(","):
        algo, *fields = spec.split(":")
        extra = dict(f.split("=", 1) for f in fields)
        for seed in seeds:
            cfg = TrainConfig(city=args.city, n_agents=args.agents, seed=seed, algo=algo,
                              experts=args.experts, total_steps=args.steps, share=args.share,
                              train_seeds=args.train_seeds, **extra)
            summary = Trainer.create(cfg, root, progress=False).run()
            run = Path(summary["run_dir"])
            runs.setdefault(cfg.label, []).append(run)
            for where, city in (("held_out", None), ("other_city", args.eval_city)):
                result = evaluate_run(run, eval_seeds, city=city)
                evals.setdefault(where, {}).setdefault(cfg.label, []).append(
                    {cfg.label if k == algo else k: v for k, v in result["policies"].items()})
            print(f"{cfg.label} seed {seed}: {summary['env_steps']} steps, "
                  f"{summary['wall_s']:.0f} s,"
                  f" greedy return {summary['final_return']:.2f}, travel time "
                  f"{summary['mean_travel_time']:.0f} s", flush=True)
    total_s = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    cmp = compare_runs([r for rs in runs.values() for r in rs],
                       args.out / "sample_efficiency.png")
    generalisation = {where: _mean_eval(by_algo) for where, by_algo in evals.items()}
    report = {"city": args.city, "agents": args.agents, "steps": args.steps, "seeds": seeds,
              "share": args.share, "train_seeds": args.train_seeds,
              "experts": args.experts, "eval_city": args.eval_city, "eval_seeds": eval_seeds,
              "total_wall_s": round(total_s, 1), "training": cmp,
              "generalisation": generalisation, "goals": _goals(cmp, generalisation)}
    (args.out / "sample_efficiency.json").write_text(json.dumps(report, indent=2))
    (args.out / "sample_efficiency.md").write_text(_markdown(report))
    print(_markdown(report))


def _mean_eval(by_algo: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Mean over seeds of each trained policy; references taken once (same scenarios)."""
    out = {}
    for algo, results in by_algo.items():
        out[algo] = {m: float(np.mean([r[algo][m] for r in results])) for m in results[0][algo]}
        for ref in ("shortest-path", "congestion-aware"):
            out.setdefault(ref, results[0][ref])
    return out


def _goals(cmp: dict, gen: dict) -> dict:
    """Both goals for every reled variant: steps to IPPO's final return as a fraction of IPPO's
    budget (goal <= 1/3) and held-out travel time against congestion-aware (goal <= +10%)."""
    rows = {r["algo"]: r for r in cmp["algos"]}
    goals = {}
    for label, row in rows.items():
        if not label.startswith("reled") or "ippo" not in rows:
            continue
        need, budget = row["steps_to_ippo_final"], rows["ippo"]["env_steps"]
        tt = gen["held_out"][label]["mean_travel_time"]
        ref = gen["held_out"]["congestion-aware"]["mean_travel_time"]
        goals[label] = {"steps_to_ippo_final": need, "ippo_steps": budget,
                        "ratio": need / budget if need is not None else None,
                        "sample_efficiency_met": need is not None and need <= budget / 3,
                        "held_out_travel_time_vs_congestion_aware": tt / ref - 1.0,
                        "travel_time_met": tt <= 1.1 * ref}
    return goals


def _markdown(r: dict) -> str:
    lines = [f"# Sample efficiency: {r['city']}, {r['agents']} agents, {r['steps']} env steps, "
             f"seeds {r['seeds']}, experts `{r['experts']}`, share `{r['share']}`, "
             f"{r['train_seeds']} training OD scenarios per run", "",
             f"Total wall time {r['total_wall_s']:.0f} s. IPPO final training return: "
             f"{_f(r['training']['ippo_final_return'])}.", "",
             "Steps to IPPO final: env steps the seed-mean training curve needs to reach IPPO's "
             "final return (runs reaching it on their own in brackets). Greedy figures: final "
             "policy on the first training scenario.", "",
             "| algo | final train return | steps to IPPO final | greedy travel time (s) "
             "| greedy arrival | wall (s) |", "|---|---|---|---|---|---|"]
    for a in r["training"]["algos"]:
        lines.append(f"| {a['algo']} | {a['final_return']:.2f} ± {a['final_return_std']:.2f} | "
                     f"{_f(a['steps_to_ippo_final'])} ({a['reached_ippo_final']}/{a['runs']}) | "
                     f"{_f(a['greedy_travel_time'])} | {_f(a['greedy_arrival_rate'])} | "
                     f"{a['wall_s']:.0f} |")
    for where, title in (("held_out", f"held-out seeds {r['eval_seeds']} of {r['city']}"),
                         ("other_city", f"{r['eval_city']}, seeds {r['eval_seeds']}")):
        lines += ["", f"Greedy policies on {title}:", "",
                  "| policy | mean travel time (s) | p95 (s) | arrival rate | return |",
                  "|---|---|---|---|---|"]
        for name, m in r["generalisation"][where].items():
            lines.append(f"| {name} | {m['mean_travel_time']:.1f} | {m['p95_travel_time']:.1f} "
                         f"| {m['arrival_rate']:.3f} | {m['mean_return']:.2f} |")
    lines += ["", "Goals: " + json.dumps(r["goals"]), ""]
    return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:,.2f}" if isinstance(x, float) else str(x)


if __name__ == "__main__":
    main()
