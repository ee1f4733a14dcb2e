"""Which part of the bound follows the measured drift per plan, and which does not?

A diagnostic companion of ``bound_validity.py`` (same scenario, candidates and training), for
design seeds: for each candidate plan and reled iteration it records, as plan means over the
agents, the bound's raw parts under the current policy (``Vol_ext``, the trial ``Move`` and the
trial TV, reward units per decision / TV), the ``Move`` of longer trials (``--trial-steps``),
the *realised* move of the iteration (the same measure as ``Move`` with the trained policy
after the iteration as the successor: what the trial tries to predict), the number of
minibatch steps the iteration took, and the measured drift (the others' travel times on the
plan cells, as in ``bound_validity.py``). Appends one JSON object per (seed, plan) to
``benchmarks/results/bound_diagnosis.jsonl`` (a seed measured again replaces its rows) and
writes the summary ``bound_diagnosis.md`` from it (``--render``: the summary only). Seeds
5-9 and 15-24 are used up (``bound_validity.py``'s hold-out and the v5 confirmatory seeds) and
25-39 are reserved for the confirmatory test of bound version 6: the script refuses them.
Design seeds: 0-4, 10-14 and 40-49.

``--bound-version 6`` judges with bound v6 (the lookahead) and records per update the
lookahead's forecast move beside the v5 terms, into ``bound_diagnosis_v6.{jsonl,md}``
(``--out STEM``: other files), with a summary of both verdicts against the drift.

    python benchmarks/bound_diagnosis.py --preset aguascalientes-peak --seeds 0 1 2 3 4
        [--iterations 2] [--trial-steps 8 44] [--bound-version 6] [--out STEM] [--render]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bound_validity import (  # benchmarks/ is the script's folder
    frozen_probs,
    greedy_run,
    plan_cells,
    plan_drift,
    seed_case,
)

from relied.experts.bound import BoundConfig, stationarity_bound
from relied.experts.critic import check_plan, plan_bounds, successor_move
from relied.rl.config import TrainConfig
from relied.rl.envs import make_vector_env
from relied.rl.trainer import Trainer
from relied.rl.trial import trial_update

RESULTS = Path(__file__).parent / "results"
#: bound_validity.py's hold-out seeds (--first-seed 5, --seeds 5), its pre-registered
#: confirmatory seeds of bound v5 (--first-seed 15, --seeds 10;
#: bound_validity_preregistration.md) and those reserved for bound v6's confirmatory test (25-39;
#: bound_validity_v6_preregistration.md)
HOLD_OUT = frozenset(range(5, 10)) | frozenset(range(15, 40))
RAW = (50.0, 50.0)  # scales that leave the terms unscaled (TERM_LEVEL / 50)


def seed_rows(preset_name: str, seed: int, args, work: Path) -> list[dict]:
    bound = BoundConfig(gamma=TrainConfig().gamma, version=args.bound_version)
    case = seed_case(preset_name, seed, args.agents, args.eq_iterations, bound, work)
    net, sc, ref = case.net, case.sc, case.reference_bound
    out = []
    for name, routes in case.candidates.items():
        t0 = time.perf_counter()
        report, run = check_plan(net, sc, routes, bound, case.untrained, reference=ref,
                                 trial_update=case.trial)
        cells = plan_cells(run.edges_by_step, sc.dt_s)
        trainer = case.trainer(name, routes, run, work, "bound-diagnosis")
        venv = make_vector_env(sc, 1, "dummy")
        local = [greedy_run(net, sc, trainer.model)]
        previous = None
        iters = []
        for _ in range(args.iterations):
            before = frozen_probs(trainer.model)
            terms = plan_bounds(net, sc, routes, bound, before, previous, scales=RAW,
                                trial_update=trainer.trial_update(), run=run)
            def lam(t: Trainer = trainer) -> np.ndarray:
                return t._expert_weights()[0].cpu().numpy()

            longer = {}
            for steps in args.trial_steps:
                succ = trial_update(trainer.model, trainer.optim, trainer.cfg, lam,
                                    steps=steps)(run.traj)
                longer[str(steps)] = float(successor_move(net, sc, run, before, succ).mean())
            decisions = trainer.counters["decisions"]
            trainer.iterate(venv)
            rows = trainer.counters["decisions"] - decisions
            after = frozen_probs(trainer.model)
            realised = successor_move(net, sc, run, before, after)
            tv_after = run.decisions.divergence(sc.n_agents, before, after,
                                                bound.divergence)[1]
            _, _, realised_div = stationarity_bound(np.zeros(sc.n_agents), tv_after,
                                                    terms.groups, bound.gamma, sc.reward_bound)
            local.append(greedy_run(net, sc, trainer.model))
            d = plan_drift(local[-2][1], local[-1][1], cells, net.freeflow_s)
            groups = np.array([len(g) - 1 for g in terms.groups], dtype=float)
            ahead = {} if terms.lookahead is None else {
                "lookahead_move": float(terms.lookahead.mean()),
                "rho_lookahead_drift": spearman(terms.lookahead, d)}
            iters.append(ahead | {
                "vol": float(terms.volatility.mean()), "move": float(terms.move.mean()),
                "trial_tv_term": float(terms.divergence.mean()),
                "co_occupants": float(groups.mean()),
                "move_steps": longer, "realised_move": float(realised.mean()),
                "update_steps": trainer.cfg.epochs * int(np.ceil(rows / trainer.cfg.minibatch)),
                "decision_rows": int(rows), "drift_s": float(d.mean()),
                "rho_move_drift": float(np.corrcoef(np.argsort(np.argsort(terms.move)),
                                                    np.argsort(np.argsort(d)))[0, 1]),
                "rho_realised_drift": float(np.corrcoef(np.argsort(np.argsort(realised)),
                                                        np.argsort(np.argsort(d)))[0, 1]),
                "realised_tv_term": float(realised_div.mean()),
                "agents": ({} if terms.lookahead is None else
                           {"lookahead_move": terms.lookahead.tolist()}) |
                          {"vol": terms.volatility.tolist(), "move": terms.move.tolist(),
                           "tv_term": terms.divergence.tolist(),
                           "realised_move": realised.tolist(),
                           "realised_tv_term": realised_div.tolist(), "drift_s": d.tolist()},
            })
            previous = before
        venv.close()
        trainer.folder.release()
        row = {"preset": preset_name, "seed": seed, "plan": name, "bound_version": bound.version,
               "accepted": report.accepted,
               "too_slow": report.too_slow, "plan_bound": report.plan_bound,
               "reference_bound": ref, "travel_time": report.mean_travel_time,
               "iterations": iters, "wall_s": time.perf_counter() - t0}
        if report.lookahead:
            row |= {"bound_accepted": report.bound_accepted,
                    "lookahead_drift_s": report.lookahead_drift_s,
                    "reference_lookahead_drift_s": report.reference_lookahead_drift_s}
        out.append(row)
        print(f"{preset_name} seed {seed} {name}: drift "
              + ", ".join(f"{i['drift_s']:.3f}" for i in iters) + " s", file=sys.stderr,
              flush=True)
    case.judge.folder.release()
    return out


def rank(x) -> np.ndarray:
    return np.argsort(np.argsort(np.asarray(x), kind="stable"), kind="stable").astype(float)


def spearman(x, y) -> float:
    rx, ry = rank(x), rank(y)
    return float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else float("nan")


def external_only(rows: list[dict], gamma: float = 0.99) -> dict[str, bool]:
    """The critic's verdict on the external term alone (``c1 (Vol_ext + Move)`` per agent,
    scaled by the shortest-path plan's level as the critic scales it; the divergence term left
    out; the return criterion kept), per plan of one seed."""
    c1 = 1.0 / (1.0 - gamma)

    def ext(r: dict) -> np.ndarray:
        a = r["iterations"][0]["agents"]
        return c1 * (np.asarray(a["vol"]) + np.asarray(a["move"]))

    ref = ext(next(r for r in rows if r["plan"] == "shortest-path"))
    level = max(float(np.quantile(ref, 0.9)), float(ref.mean()), c1 * 1e-4)
    return {r["plan"]: bool(ext(r).mean() / level < ref.mean() / level and not r["too_slow"])
            for r in rows}


def plan_key(row: dict) -> str:
    return row["plan"]


def verdict_gap(drift: list[float], rows: list[dict], verdict=lambda r: r["accepted"],
                of=lambda r: r, keep=lambda r: True) -> str:
    """Rejected minus accepted mean ``drift`` over the kept ``rows`` (one seed's plans);
    ``verdict(of(row))`` says whether a plan is accepted."""
    acc = [x for x, r in zip(drift, rows, strict=True) if keep(r) and verdict(of(r))]
    rej = [x for x, r in zip(drift, rows, strict=True) if keep(r) and not verdict(of(r))]
    return f"{np.mean(rej) - np.mean(acc):.3f}" if acc and rej else "-"


def render(rows: list[dict]) -> str:
    """Per seed: the plans' rank correlation (over the five plans) of the trial's move, the
    external term and the realised move with the first update's drift and with the mean over
    the updates; the second update's share of the drift; rejected minus accepted drift. Then
    the per-plan table."""
    s_ = 60.0  # seconds per reward unit (Scenario.time_scale_s of the presets)
    versions = ", ".join(str(v) for v in sorted({r["bound_version"] for r in rows}))
    lines = [f"Bound diagnosis (`benchmarks/bound_diagnosis.py`, design seeds; bound settings "
             f"version {versions}). Per seed, Spearman over the five "
             "plans of the first update's trial move, `Vol_ext + move` and the realised move "
             "(the trained successor's move, what the trial predicts) against the plans' drift "
             "in the first update (d1) and over all updates (mean); the later updates' share of "
             "the drift; rejected minus accepted drift (critic's verdict) on d1 and on the mean, "
             "and on the mean by the bound alone (no return criterion), without the "
             "shortest-path plan (the reference) and by the external term alone (the "
             "divergence term left out of the verdict).",
             "", "| preset | seed | move~d1 | ext~d1 | realised~d1 | move~mean | ext~mean | "
             "realised~mean | later share | gap d1 (s) | gap mean (s) | gap mean, bound alone "
             "| gap mean, without shortest path | gap mean, external term alone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["preset"], r["seed"]) for r in rows})
    cols = []
    for preset, seed in keys:
        rs = [r for r in rows if (r["preset"], r["seed"]) == (preset, seed)]
        first = [r["iterations"][0] for r in rs]
        d1 = [i["drift_s"] for i in first]
        dm = [float(np.mean([i["drift_s"] for i in r["iterations"]])) for r in rs]
        move = [i["move"] for i in first]
        ext = [i["vol"] + i["move"] for i in first]
        real = [i["realised_move"] for i in first]
        total = sum(i["drift_s"] for r in rs for i in r["iterations"])
        later = 1 - sum(d1) / total if total else float("nan")

        cols.append([spearman(a, b) for b in (d1, dm) for a in (move, ext, real)])
        lines.append(f"| {preset} | {seed} | " + " | ".join(f"{x:.2f}" for x in cols[-1])
                     + f" | {later:.2f} | {verdict_gap(d1, rs)} | {verdict_gap(dm, rs)} | "
                     + verdict_gap(dm, rs, lambda r: r["plan_bound"] < r["reference_bound"])
                     + " | " + verdict_gap(dm, rs, keep=lambda r: r["plan"] != "shortest-path")
                     + " | " + verdict_gap(dm, rs, external_only(rs).__getitem__, plan_key)
                     + " |")
    lines.append("| mean | | " + " | ".join(f"{x:.2f}" for x in np.nanmean(cols, axis=0))
                 + " | | | | | | |")
    first = [r["iterations"][0] for r in rows]
    lines += ["", "Per agent, first update, Spearman with the drift over the agents of one plan: "
              f"realised move median {np.median([i['rho_realised_drift'] for i in first]):.2f} "
              f"(lowest {min(i['rho_realised_drift'] for i in first):.2f}), trial move median "
              f"{np.nanmedian([i['rho_move_drift'] for i in first]):.2f}, over {len(first)} "
              "plans."]
    steps = sorted({k for r in rows for i in r["iterations"] for k in i["move_steps"]}, key=int)
    lines += ["", "Per plan and update (s; moves are plan means over the agents' plan cells, "
              "`steps`: the update's minibatch steps, against the trial's 4; TV terms raw):", "",
              "| preset | seed | plan | accepted | too slow | update | Vol_ext | trial move | "
              + " | ".join(f"move, {k} steps" for k in steps)
              + " | realised move | drift | trial TV term | realised TV term | steps |",
              "|---|---:|---|---|---|---:|---:|---:|" + "---:|" * len(steps)
              + "---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["preset"], r["seed"])):
        for t, i in enumerate(r["iterations"]):
            lines.append(
                f"| {r['preset']} | {r['seed']} | {r['plan']} | {r['accepted']} | "
                f"{r['too_slow']} | {t + 1} | {i['vol'] * s_:.3f} | {i['move'] * s_:.3f} | "
                + " | ".join(f"{i['move_steps'].get(k, float('nan')) * s_:.3f}" for k in steps)
                + f" | {i['realised_move'] * s_:.3f} | {i['drift_s']:.3f} | "
                f"{i['trial_tv_term']:.0f} | {i['realised_tv_term']:.0f} | "
                f"{i['update_steps']} |")
    return "\n".join(lines)


def render_lookahead(rows: list[dict]) -> str:
    """Bound v6 rows: per seed the five plans' Spearman of the lookahead's forecast move (and
    v5's trial move) with the first update's drift and the mean over the updates, and the
    rejected minus accepted drift (and ratio) under v6's and v5's verdicts."""
    lines = ["", "Bound v6 (the lookahead): per seed, Spearman over the five plans of the "
             "lookahead's forecast move and v5's trial move against the first update's drift "
             "(d1) and the mean over the updates; rejected minus accepted mean drift (and "
             "rejected / accepted) by v6's and by v5's verdict; per agent, the median Spearman "
             "of the forecast with the first update's drift.", "",
             "| preset | seed | lookahead~d1 | move~d1 | lookahead~mean | move~mean | v6 accepts "
             "| gap v6 (s) | ratio v6 | gap v5 (s) | ratio v5 | per-agent lookahead~d1 |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]

    def gap(dm: list[float], verdict: list[bool]) -> tuple[str, str]:
        acc = [x for x, v in zip(dm, verdict, strict=True) if v]
        rej = [x for x, v in zip(dm, verdict, strict=True) if not v]
        if not acc or not rej:
            return "-", "-"
        return f"{np.mean(rej) - np.mean(acc):.3f}", f"{np.mean(rej) / np.mean(acc):.2f}"

    ratios: dict[str, list[float]] = {"v6": [], "v5": []}
    for preset, seed in sorted({(r["preset"], r["seed"]) for r in rows}):
        rs = [r for r in rows if (r["preset"], r["seed"]) == (preset, seed)]
        first = [r["iterations"][0] for r in rs]
        d1 = [i["drift_s"] for i in first]
        dm = [float(np.mean([i["drift_s"] for i in r["iterations"]])) for r in rs]
        ahead, move = [i["lookahead_move"] for i in first], [i["move"] for i in first]
        g6, g5 = gap(dm, [r["accepted"] for r in rs]), gap(dm, [r["bound_accepted"] for r in rs])
        for k, g in (("v6", g6), ("v5", g5)):
            if g[1] != "-":
                ratios[k].append(float(g[1]))
        lines.append(f"| {preset} | {seed} | {spearman(ahead, d1):.2f} | {spearman(move, d1):.2f}"
                     f" | {spearman(ahead, dm):.2f} | {spearman(move, dm):.2f} | "
                     + ", ".join(r["plan"] for r in rs if r["accepted"]) + f" | {g6[0]} | "
                     f"{g6[1]} | {g5[0]} | {g5[1]} | "
                     f"{np.nanmedian([i['rho_lookahead_drift'] for i in first]):.2f} |")
    lines += ["", "Mean per-seed ratio rejected / accepted over the seeds with both verdicts: "
              + "; ".join(f"{k} {np.mean(v):.3f} over {len(v)} seeds (wrong side in "
                          f"{sum(x < 1 for x in v)})" if v else f"{k} -"
                          for k, v in ratios.items()) + "."]
    return "\n".join(lines)


def rows_path(args) -> Path:
    """The rows file: ``--out STEM``.jsonl, by default ``bound_diagnosis.jsonl`` (v5) or
    ``bound_diagnosis_v6.jsonl`` (``--bound-version 6``)."""
    stem = args.out if args.out is not None else RESULTS / (
        "bound_diagnosis" if args.bound_version < 6 else "bound_diagnosis_v6")
    return stem.with_name(stem.name + ".jsonl")


def load_rows(args) -> list[dict]:
    path = rows_path(args)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def render_all(rows: list[dict]) -> str:
    return render(rows) + (render_lookahead(rows) if rows and all(
        "bound_accepted" in r for r in rows) else "")


def save_rows(rows: list[dict], args) -> None:
    path = rows_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".md").write_text(render_all(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="aguascalientes-peak")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--eq-iterations", type=int, default=2)
    ap.add_argument("--trial-steps", type=int, nargs="*", default=[8, 44])
    ap.add_argument("--bound-version", type=int, choices=(5, 6), default=5,
                    help="the critic's verdict: 5 (training's default) or 6 (the lookahead)")
    ap.add_argument("--out", type=Path, default=None, help="rows stem: STEM.jsonl and STEM.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the summary from the "
                    "saved rows")
    args = ap.parse_args()
    if not args.render:
        if set(args.seeds) & HOLD_OUT:
            raise SystemExit(f"seeds {sorted(set(args.seeds) & HOLD_OUT)} are bound_validity's "
                             "hold-out or confirmatory seeds (5-9, 15-39); diagnose on the design "
                             "seeds 0-4, 10-14 or 40-49")
        torch.set_num_threads(1)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                new = seed_rows(args.preset, seed, args, Path(tmp))
            save_rows([r for r in load_rows(args) if (r["preset"], r["seed"])
                       != (args.preset, seed)] + new, args)
    md = render_all(load_rows(args))
    rows_path(args).with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
