"""Tokens of every planner prompt as sent, for growing fleets on one city.

The team runs for real (offline planner, no cache) with an epsilon no plan can meet, so every
run goes through all ``--rounds`` critic rounds and the late-round prompts carry the full
feedback (own last plan, verdicts, the other agents' loads). Every model call's prompt is
measured by the guard with the same estimate it uses to keep prompts within the model's
context (``relied.agents.prompt.estimate_tokens``: one token per digit and punctuation mark,
one per four letters, an upper estimate for the tokenizers of local models).

    python benchmarks/prompt_size.py --json     # writes benchmarks/results/prompt_size.{md,json}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from relied.agents.clients import OFFLINE_CARD
from relied.agents.generate import PlanRequest, plan
from relied.agents.team import TeamConfig
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig

RESULTS = Path(__file__).parent / "results"
GOAL = 6_000


def measure(city: str, n: int, rounds: int, group_size: int) -> dict:
    config = TeamConfig(max_rounds=rounds, group_size=group_size,
                        bound=BoundConfig(epsilon=1e-9, group="planner"))
    request = PlanRequest(scenario=Scenario(city=city, n_agents=n, seed=0), config=config,
                          use_cache=False)
    start = time.perf_counter()
    outcome, _, _, _ = asyncio.run(plan(request))
    tokens = [u.estimated_prompt_tokens for u in outcome.usage]
    per_round = len(tokens) // max(outcome.rounds, 1)
    return {"agents": n, "groups": outcome.groups, "rounds": outcome.rounds,
            "calls": len(tokens), "max_prompt_tokens": max(tokens),
            "mean_prompt_tokens": round(sum(tokens) / len(tokens)),
            "round1_max_prompt_tokens": max(tokens[:per_round]),
            "last_round_max_prompt_tokens": max(tokens[-per_round:]),
            "within_goal": max(tokens) <= GOAL, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", default="aguascalientes")
    ap.add_argument("--agents", default="20,100,500,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=TeamConfig().group_size)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    rows = [measure(args.city, int(n), args.rounds, args.group_size)
            for n in args.agents.split(",")]
    result = {"city": args.city, "rounds": args.rounds, "group_size": args.group_size,
              "goal_tokens": GOAL, "context": OFFLINE_CARD.num_ctx, "rows": rows}
    cols = ["agents", "groups", "calls", "round1_max_prompt_tokens",
            "last_round_max_prompt_tokens", "max_prompt_tokens", "mean_prompt_tokens",
            "within_goal", "seconds"]
    lines = [f"Planner prompt tokens (estimated) on {args.city}, offline planner, "
             f"{args.rounds} critic rounds, group size <= {args.group_size}, "
             f"{OFFLINE_CARD.num_ctx:,}-token context; goal <= {GOAL:,} per prompt", "",
             "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prompt_size.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "prompt_size.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result) if args.json else "\n".join(lines))


if __name__ == "__main__":
    main()
