"""Tianshou's own on-policy algorithms as baselines, beside relied's engines, same budget.

Trains ``tianshou:ppo`` and ``tianshou:a2c`` (Tianshou's ``PPO`` and ``A2C`` through its
collector and trainer, action masks honoured), ``reled`` on the Tianshou engine, and ``ippo`` /
``reled`` on the fast engine, each over 5 seeds on west-oakland (10 learners, 300 s horizon,
fresh trips every iteration), and reports per algorithm the greedy policy's mean travel time on
held-out trips (seeds ``seed + 1000, seed + 1001``) beside shortest-path on the same trips, the
arrival rate and the wall time, as mean [95% bootstrap interval] over seeds.

    python benchmarks/tianshou_baselines.py [--seeds 0,1,2,3,4] [--steps 12000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from sample_efficiency import interval  # benchmarks/ is on sys.path when run as a script

from relied.rl.config import TrainConfig
from relied.rl.tianshou_engine import TianshouRun
from relied.rl.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
#: (label, algo, engine)
ROWS = [("ippo (fast)", "ippo", "fast"), ("reled (fast)", "reled", "fast"),
        ("reled (tianshou engine)", "reled", "tianshou"),
        ("tianshou:ppo", "tianshou:ppo", "tianshou"), ("tianshou:a2c", "tianshou:a2c", "tianshou")]


def train(algo: str, engine: str, seed: int, steps: int, root: Path) -> dict:
    cfg = TrainConfig(city="west-oakland", n_agents=10, horizon_s=300, algo=algo, seed=seed,
                      experts="offline", share="all", total_steps=steps, n_envs=2,
                      engine=engine, heldout_seeds=2, device="cpu")
    cls = TianshouRun if cfg.engine == "tianshou" else Trainer
    return cls.create(cfg, root, progress=False).run()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=12_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    table, runs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, algo, engine in ROWS:
            rs = []
            for seed in seeds:
                s = train(algo, engine, seed, args.steps, Path(tmp))
                rs.append({k: s[k] for k in ("seed", "heldout_mean_travel_time",
                                             "heldout_arrival_rate",
                                             "heldout_shortest_path_travel_time", "wall_s",
                                             "env_steps")})
                print(f"{label} seed {seed}: held-out {s['heldout_mean_travel_time']:.1f} s "
                      f"(shortest path {s['heldout_shortest_path_travel_time']:.1f} s), "
                      f"{s['wall_s']:.0f} s", flush=True)
            runs[label] = rs
            table[label] = {
                "algo": algo, "engine": engine,
                "heldout_travel_time": interval([r["heldout_mean_travel_time"] for r in rs]),
                "vs_shortest_path": interval([r["heldout_mean_travel_time"]
                                              / r["heldout_shortest_path_travel_time"] - 1
                                              for r in rs]),
                "heldout_arrival": interval([r["heldout_arrival_rate"] for r in rs]),
                "wall_s": interval([r["wall_s"] for r in rs]),
            }
    out = {"benchmark": "tianshou_baselines", "city": "west-oakland", "agents": 10,
           "seeds": seeds, "steps": args.steps, "python": platform.python_version(),
           "machine": f"{platform.machine()}, 2 cores shared with other work",
           "wall_s": time.perf_counter() - start, "table": table, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tianshou_baselines.json").write_text(json.dumps(out, indent=1))
    md = markdown(out)
    (RESULTS / "tianshou_baselines.md").write_text(md)
    print(json.dumps(out) if args.json else md)


def markdown(out: dict) -> str:
    def ci(v, f=1.0, d=1):
        return f"{v[0] * f:.{d}f} [{v[1] * f:.{d}f}, {v[2] * f:.{d}f}]"

    lines = [f"west-oakland, {out['agents']} learners, {len(out['seeds'])} seeds, "
             f"{out['steps']:,} env steps each, fresh trips; greedy policy on held-out trips. "
             "Mean [95% bootstrap interval] over seeds. Command: "
             "`python benchmarks/tianshou_baselines.py`", "",
             "| algorithm | engine | held-out tt (s) | vs shortest path | arrival | wall (s) |",
             "|---|---|---|---|---|---|"]
    for row in out["table"].values():
        lines.append(f"| {row['algo']} | {row['engine']} | {ci(row['heldout_travel_time'])} | "
                     f"{ci(row['vs_shortest_path'], 100)}% | "
                     f"{ci(row['heldout_arrival'], 1, 2)} | {ci(row['wall_s'], 1, 0)} |")
    lines += ["", f"Machine: {out['machine']}; wall {out['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
