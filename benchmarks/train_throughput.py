"""Training throughput: env agent-steps per second of the whole loop (sampling + update).

For 20, 100 and 1,000 agents on aguascalientes, one training iteration of each configuration
(one episode per env from the untrained policy, the longest episodes, then a full update with
minibatches scaled with the agents); the rate is (simulator steps x agents) / training wall
time, demonstrations and final plots excluded.
Writes ``benchmarks/results/train_throughput.{md,json}``.

    .venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from relied.rl.config import TrainConfig
from relied.rl.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
CASES = [  # (agents, algo, share)
    (20, "ippo", "none"), (20, "reled", "none"), (100, "ippo", "all"), (100, "reled", "all"),
    (1000, "ippo", "all"), (1000, "reled", "all"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--city", default="aguascalientes")
    p.add_argument("--steps", type=int, default=1, help="env-step budget per case "
                   "(1: exactly one iteration)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agents, algo, share in CASES:
            cfg = TrainConfig(city=args.city, n_agents=agents, algo=algo, share=share,
                              experts="shortest-path", total_steps=args.steps, n_envs=2,
                              minibatch=min(512 * max(1, agents // 20), 8192))
            s = Trainer.create(cfg, Path(tmp), progress=False).run()
            rows.append({"agents": agents, "algo": algo, "share": share,
                         "env_steps": s["env_steps"], "decisions": s["decisions"],
                         "wall_s": s["wall_s"],
                         "agent_steps_per_s": round(s["train_agent_steps_per_s"]),
                         "decisions_per_s": round(s["decisions"] / s["wall_s"])})
            print(rows[-1], flush=True)
    report = {"city": args.city, "steps": args.steps, "cpu_count": os.cpu_count(),
              "torch_threads": 1, "n_envs": 2, "vector": "dummy", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Training throughput on {args.city} (budget {args.steps} env steps per case, "
             f"2 envs, 1 torch thread, {os.cpu_count()} CPUs shared with other jobs)", "",
             "| agents | algo | share | env steps | decisions | wall (s) | agent-steps/s "
             "| decisions/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['agents']} | {r['algo']} | {r['share']} | {r['env_steps']} | "
                     f"{r['decisions']} | {r['wall_s']:.1f} | {r['agent_steps_per_s']:,} | "
                     f"{r['decisions_per_s']:,} |")
    (args.out / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
