"""Agent-steps per second of the batched core and of the PettingZoo face.

Each configuration runs one full episode (horizon 1800 s, dt 5 s = 360 steps) in which the
agents drive free-flow shortest paths; only the environment's ``step`` is timed (the policy's
time is excluded), and the batched figure includes building the observations and masks.

    python benchmarks/env_throughput.py [--json] [--out benchmarks/results/env_throughput.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from relied.env.cities import load_city  # noqa: E402
from relied.env.core import RoutingCore  # noqa: E402
from relied.env.parallel import RoutingParallelEnv  # noqa: E402
from relied.env.policies import ShortestPathPolicy  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402

CITIES = ("aguascalientes", "north-bayreuth")
AGENTS = (10, 100, 1000, 5000)


def batched(net, n: int, seed: int = 0) -> dict[str, float]:
    core = RoutingCore(net, Scenario(city=net.name, n_agents=n, seed=seed,
                                     departure_window_s=600))
    policy = ShortestPathPolicy()
    core.reset()
    spent, steps = 0.0, 0
    while not core.done:
        actions = policy(core)
        core.action_mask()
        t = time.perf_counter()
        core.step(actions)
        spent += time.perf_counter() - t
        steps += 1
    return {"steps": steps, "agent_steps_per_s": n * steps / spent}


def pettingzoo(net, n: int, seed: int = 0) -> dict[str, float]:
    env = RoutingParallelEnv(Scenario(city=net.name, n_agents=n, seed=seed,
                                      departure_window_s=600), net=net)
    policy = ShortestPathPolicy()
    env.reset()
    spent, agent_steps = 0.0, 0
    while env.agents:
        joint = policy(env.core)
        actions = {a: int(joint[env._index[a]]) for a in env.agents}
        t = time.perf_counter()
        env.step(actions)
        spent += time.perf_counter() - t
        agent_steps += len(actions)
    return {"agent_steps_per_s": agent_steps / spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/env_throughput.md"))
    parser.add_argument("--repeats", type=int, default=3, help="best of N episodes")
    args = parser.parse_args()
    rows = []
    for city in CITIES:
        net = load_city(city)
        for n in AGENTS:
            b = max((batched(net, n, s) for s in range(args.repeats)),
                    key=lambda r: r["agent_steps_per_s"])
            p = max((pettingzoo(net, n, s) for s in range(args.repeats)),
                    key=lambda r: r["agent_steps_per_s"])
            rows.append({"city": city, "agents": n,
                         "batched_agent_steps_per_s": round(b["agent_steps_per_s"]),
                         "batched_us_per_step": round(1e6 * n / b["agent_steps_per_s"], 1),
                         "pettingzoo_agent_steps_per_s": round(p["agent_steps_per_s"])})
    result = {"benchmark": "env_throughput", "python": platform.python_version(),
              "numpy": np.__version__, "cpu": platform.processor() or platform.machine(),
              "rows": rows}
    lines = ["| city | agents | batched agent-steps/s | batched us/step "
             "| PettingZoo agent-steps/s |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['city']} | {r['agents']} | {r['batched_agent_steps_per_s']:,} | "
              f"{r['batched_us_per_step']} | {r['pettingzoo_agent_steps_per_s']:,} |" for r in rows]
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Environment throughput (one core)\n\n{table}\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result) if args.json else table)


if __name__ == "__main__":
    main()
