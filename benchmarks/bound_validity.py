"""Does the stationarity bound predict non-stationarity, and does the critic discriminate?

On each congested preset (default ``aguascalientes-peak`` and ``monaco-peak``, with fewer
learners, the background traffic kept so the streets stay congested), for each seed (from
``--first-seed``: seeds 0-4 were used to design bound version 4, so the reported figures use
seeds 5 on) and each candidate plan
(free-flow shortest path, congestion-aware, dynamic user equilibrium, and two perturbed plans:
40% of the agents detour through a random node, on top of shortest path or congestion-aware):

1. the critic judges the plan before training (untrained learners and, bound version 5, their
   trial update on the plan's demonstrations, ``Trainer.trial_update``; reference: the
   free-flow shortest paths, which therefore fail their own strict check);
2. the plan is saved as the demonstration batch and ``relied.rl.trainer.Trainer`` (reled) trains
   ``--iterations`` iterations from the same initial weights (one episode per iteration);
3. before every iteration each agent's bound is computed with the current policy and its trial
   update, and after it the greedy policy is run once (edge traversals recorded);
4. drift of agent i between iterations t and t+1: mean absolute change (s) of the realised
   travel times of the (edge, 60 s entry bin) cells of its plan route, the states its
   demonstrations and its bound are about, with its own traversals left out (time-dependent
   edge times of the other vehicles; free flow where none entered): how much its local
   environment moved because the others changed. ``route drift`` is the earlier measure: the
   same on the cells of its own greedy route of iteration t, its own traversals included.

Reported: Spearman rank correlation between bound_i(t) and drift_i(t) (pairs pooled over agents,
candidates and iterations within a seed), mean over seeds with a 95% bootstrap interval over
seeds, for the scaled bound the critic judges, the bound in return units, each scaled term, the
co-occupant count and the trial step's measured move alone; and, per seed, mean drift of
accepted vs rejected candidates (difference and ratio, bootstrap intervals over seeds), also
leaving out the plans identical to the reference, and on the bound's verdict alone (without the
return criterion). ``--bound-version 6`` judges with bound v6 (the lookahead: the drift the
learners' whole next update with the plan's demonstrations is forecast to cause, seeded by the
critic's own stream) and reports v5's verdict (``bound_accepted``), the forecast drifts and the
lookahead's per-agent rank correlation beside it. Writes
``benchmarks/results/bound_validity.{json,md}`` (``--out STEM``:
``STEM.{json,md}`` instead, e.g. a confirmatory run on fresh seeds beside the hold-out file);
``--rerender`` rebuilds them from the JSON.

    python benchmarks/bound_validity.py [--presets P ...] [--seeds 5] [--first-seed 5]
        [--agents 30] [--iterations 3] [--workers 2] [--update] [--json] [--out STEM]
        [--bound-version 5|6]
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.equilibrium import edge_times, fastest_routes, solve_equilibrium
from relied.env.presets import load_preset
from relied.env.rollout import run_episode
from relied.experts.bound import LOOKAHEAD_VERSION, BoundConfig
from relied.experts.critic import (
    check_plan,
    lookahead_drift,
    plan_bounds,
    policy_routes,
    reference_scales,
)
from relied.experts.demos import DemoMeta, save_batch
from relied.rl.config import TrainConfig
from relied.rl.envs import make_vector_env
from relied.rl.policy import TrainedPolicy
from relied.rl.trainer import Trainer
from relied.rl.trial import probs_of

RESULTS = Path(__file__).parent / "results"
BIN_S = 60.0


def perturbed(net, sc, routes, share: float, rng) -> list[list[int]]:
    """``share`` of the agents detour through a random node (free-flow legs)."""
    n = len(routes)
    movers = np.flatnonzero(rng.random(n) < share)
    via = rng.integers(0, net.n_nodes, movers.size)
    ff = net.freeflow_s[:, None]
    o = np.array([routes[i][0] for i in movers])
    d = np.array([routes[i][-1] for i in movers])
    zero = np.zeros(movers.size)
    first, _ = fastest_routes(net, ff, 1e9, o, via, zero)
    second, _ = fastest_routes(net, ff, 1e9, via, d, zero)
    out = [list(r) for r in routes]
    for k, i in enumerate(movers):
        path = first[k] + second[k][1:]
        if len(set(path)) == len(path):  # keep simple paths only
            out[i] = path
    return out


def local_sums(core: RoutingCore) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per (edge, entry bin) total and count of traversal times, and per learner its own
    traversals as rows ``(edge, bin, seconds)``."""
    net = core.net
    bins = int(np.ceil(core.end_s / BIN_S)) + 1
    total, count = np.zeros((net.n_edges, bins)), np.zeros((net.n_edges, bins))
    own = [np.zeros((0, 3)) for _ in range(core.n)]
    if core.traversals:
        veh, edge, entered, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
        b = np.minimum((entered // BIN_S).astype(np.int64), bins - 1)
        np.add.at(total, (edge, b), left - entered)
        np.add.at(count, (edge, b), 1)
        for i in range(core.n):
            mine = veh == i
            own[i] = np.stack([edge[mine], b[mine], (left - entered)[mine]], axis=1)
    return total, count, own


def plan_cells(run_edges: np.ndarray, dt_s: float) -> list[np.ndarray]:
    """Per agent the (edge, entry bin) cells of its route in the plan's execution."""
    out = []
    for i in range(run_edges.shape[1]):
        e = run_edges[:, i]
        start = np.flatnonzero((e >= 0) & np.r_[True, e[1:] != e[:-1]])
        out.append(np.stack([e[start], (start * dt_s // BIN_S).astype(np.int64)], axis=1))
    return out


def others_times(sums: tuple, i: int, cells: np.ndarray, freeflow: np.ndarray) -> np.ndarray:
    """Mean traversal time of the other vehicles in each of ``cells`` (free flow if none)."""
    total, count, own = sums
    e, b = cells[:, 0].astype(np.int64), np.minimum(cells[:, 1].astype(np.int64),
                                                    total.shape[1] - 1)
    t, c = total[e, b].copy(), count[e, b].copy()
    mine = own[i]
    for k in range(len(cells)):
        hit = (mine[:, 0] == e[k]) & (mine[:, 1] == b[k]) if mine.size else np.zeros(0, bool)
        t[k] -= mine[hit, 2].sum()
        c[k] -= hit.sum()
    return np.where(c > 0, t / np.maximum(c, 1), freeflow[e])


def plan_drift(prev: tuple, cur: tuple, cells: list[np.ndarray], freeflow) -> np.ndarray:
    """Per agent: mean |change| of the others' travel times on its plan cells."""
    return np.array([float(np.mean(np.abs(others_times(cur, i, c, freeflow)
                                          - others_times(prev, i, c, freeflow))))
                     if len(c) else 0.0 for i, c in enumerate(cells)])


def local_times(core: RoutingCore, routes) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Time-dependent edge times of a recorded run, and per agent its (edge, bin) list."""
    times = edge_times(core, BIN_S)
    cells = [[] for _ in range(core.n)]
    if core.traversals:
        veh, edge, entered, _ = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
        learner = veh < core.n
        for v, e, t in zip(veh[learner], edge[learner], entered[learner], strict=True):
            cells[int(v)].append((int(e), min(int(t // BIN_S), times.shape[1] - 1)))
    return times, cells


def drift(prev: tuple, cur: tuple) -> np.ndarray:
    """Per agent: mean |change| of the edge times along its route (previous iteration's cells)."""
    (t0, cells), (t1, _) = prev, cur
    width = min(t0.shape[1], t1.shape[1])
    out = np.zeros(len(cells))
    for i, c in enumerate(cells):
        if c:
            e, b = np.array(c).T
            b = np.minimum(b, width - 1)
            out[i] = float(np.mean(np.abs(t1[e, b] - t0[e, b])))
    return out


def frozen_probs(model):
    """``policy_probs`` of a frozen copy of ``model`` (the previous iteration's policy)."""
    model = copy.deepcopy(model)

    def probs(obs, mask, agent):
        with torch.no_grad():
            logits = model.logits(torch.as_tensor(obs, dtype=torch.float32),
                                  torch.as_tensor(mask, dtype=torch.bool),
                                  torch.as_tensor(agent, dtype=torch.long))
            return torch.softmax(logits, 1).numpy()

    return probs


def greedy_run(net, sc, model):
    """``(route-cell times, sums)`` of one greedy run of ``model``."""
    core = RoutingCore(net, sc, record_routes=True, record_traversals=True)
    episode = run_episode(core, TrainedPolicy(model))
    model.train()
    return local_times(core, episode.routes), local_sums(core)


def one_seed(task: tuple) -> dict:
    """One (preset, seed): judge, train on and measure every candidate plan."""
    name, seed, args, bound = task
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        return _one_seed(name, seed, args, bound, Path(tmp))


@dataclass
class SeedCase:
    """One (preset, seed) of the benchmark: the scenario, the candidate plans and the untrained
    learners that judge them (every candidate's trainer starts from these seeded weights)."""

    preset: object
    net: object
    sc: object
    candidates: dict[str, np.ndarray]
    bound: BoundConfig
    judge: Trainer
    untrained: object
    trial: object
    reference_bound: float

    def config(self, demos: Path | None) -> TrainConfig:
        return TrainConfig(city=self.sc.city, n_agents=self.sc.n_agents, seed=self.sc.seed,
                           algo="reled", experts="shortest-path",
                           demos_dir=str(demos) if demos else None, n_envs=1, train_seeds=1,
                           horizon_s=self.sc.horizon_s,
                           departure_window_s=self.preset.departure_window_s,
                           gamma=self.bound.gamma, bound_every=0)

    def trainer(self, name: str, routes, run, work: Path, source: str) -> Trainer:
        """A reled trainer on the plan's demonstrations (executed ``run``) alone."""
        net, sc = self.net, self.sc
        store = work / f"s{sc.seed}-{name}"
        meta = DemoMeta(batch_id=name, scenario=sc,
                        routes=[net.osm_ids[r].tolist() for r in routes], model_spec=name,
                        source=source, accepted=True)
        save_batch(store, run.decisions, meta)
        trainer = Trainer.create(self.config(store), work / "runs", progress=False)
        trainer.cores = [RoutingCore(net, sc)]
        trainer.core, trainer.scenario = trainer.cores[0], sc
        trainer.load_demos()
        return trainer


def seed_case(preset_name: str, seed: int, n_agents: int, eq_iterations: int,
              bound: BoundConfig, work: Path) -> SeedCase:
    """The preset with ``n_agents`` learners (the rest background), its five candidate plans
    and the reference bound (the free-flow shortest paths under the untrained learners)."""
    preset = load_preset(preset_name).scenario
    net = load_city(preset.city)
    share = 1 - n_agents / (preset.n_agents / (1 - preset.background_share))
    sc = preset.model_copy(update={"n_agents": n_agents, "seed": seed,
                                   "background_share": share}).resolve(net)
    rng = np.random.default_rng([seed, 11])
    sp, ca = policy_routes(net, sc, "shortest-path"), policy_routes(net, sc, "congestion-aware")
    eq = solve_equilibrium(net, sc, iterations=eq_iterations).routes
    candidates = {"shortest-path": sp, "congestion-aware": ca, "equilibrium": eq,
                  "perturbed-sp": perturbed(net, sc, sp, 0.4, rng),
                  "perturbed-ca": perturbed(net, sc, ca, 0.4, rng)}
    case = SeedCase(preset, net, sc, candidates, bound, None, None, None, float("nan"))
    case.judge = Trainer.create(case.config(None), work / "runs", progress=False)
    case.untrained, case.trial = probs_of(case.judge.model), case.judge.trial_update()
    case.reference_bound = check_plan(net, sc, sp, bound, case.untrained,
                                      trial_update=case.trial)[0].reference_bound
    return case


def _one_seed(preset_name: str, seed: int, args, bound: BoundConfig, work: Path) -> dict:
    case = seed_case(preset_name, seed, args.agents, args.eq_iterations, bound, work)
    net, sc, sp, ref = case.net, case.sc, case.candidates["shortest-path"], case.reference_bound
    untrained, trial = case.untrained, case.trial
    rows, pairs = [], []
    # v6 without --with-v5-terms: per iteration only the lookahead's forecast (the verdict's
    # v5 terms are still computed and reported by check_plan)
    lookahead_only = bound.version >= LOOKAHEAD_VERSION and not args.with_v5_terms
    for name, routes in case.candidates.items():
        report, run = check_plan(net, sc, routes, bound, untrained, reference=ref,
                                 trial_update=trial)
        cells = plan_cells(run.edges_by_step, sc.dt_s)
        trainer = case.trainer(name, routes, run, work, "bound-validity")
        venv = make_vector_env(sc, 1, "dummy")
        local = [greedy_run(net, sc, trainer.model)]
        previous = None
        drifts, route_drifts = [], []
        for _ in range(args.iterations):
            before = frozen_probs(trainer.model)
            step = trainer.trial_update()  # called before iterate: on the current weights
            if lookahead_only:
                ahead = lookahead_drift(net, sc, run, bound, before, step)
            else:
                ref_scales = reference_scales(net, sc, bound, before, previous,
                                              trial_update=step)[0]
                terms = plan_bounds(net, sc, routes, bound, before, previous,
                                    scales=ref_scales, trial_update=step)
            trainer.iterate(venv)
            local.append(greedy_run(net, sc, trainer.model))
            d = plan_drift(local[-2][1], local[-1][1], cells, net.freeflow_s)
            drifts.append(d)
            route_drifts.append(drift(local[-2][0], local[-1][0]))
            previous = before
            if lookahead_only:
                pairs += [(np.nan,) * 5 + (x, y, np.nan, z)
                          for x, y, z in zip(d, route_drifts[-1], ahead, strict=True)]
                continue
            count = np.array([len(g) - 1 for g in terms.groups], dtype=float)
            ahead = terms.lookahead if terms.lookahead is not None else np.full(d.size, np.nan)
            pairs += list(zip(terms.bound, terms.absolute, terms.divergence, terms.external,
                              count, d, route_drifts[-1], terms.move, ahead, strict=True))
        venv.close()
        trainer.folder.release()
        rows.append({"seed": seed, "plan": name, "accepted": report.accepted,
                     "same_as_reference": [list(r) for r in routes] == [list(r) for r in sp],
                     "negligible": report.negligible, "volatility_s": report.volatility_s,
                     "plan_bound": report.plan_bound, "reference_bound": ref,
                     "too_slow": report.too_slow, "mean_travel_time": report.mean_travel_time,
                     "mean_drift_s": float(np.mean(drifts)),
                     "drift_per_iteration_s": [float(np.mean(d)) for d in drifts],
                     "mean_route_drift_s": float(np.mean(route_drifts))}
                    | ({"bound_accepted": report.bound_accepted,
                        "lookahead_drift_s": report.lookahead_drift_s,
                        "reference_lookahead_drift_s": report.reference_lookahead_drift_s}
                       if report.lookahead else {}))
        print(f"{preset_name} seed {seed} {name}: accepted={report.accepted} mean bound "
              f"{report.plan_bound:.1f} (ref {ref:.1f}) drift {np.mean(drifts):.3f} s"
              + (f" (per iteration {', '.join(f'{np.mean(d):.3f}' for d in drifts)}; v5 "
                 f"accepted={report.bound_accepted}, forecast {report.lookahead_drift_s:.3f} s, "
                 f"reference's {report.reference_lookahead_drift_s:.3f} s)"
                 if report.lookahead else ""), file=sys.stderr, flush=True)
    case.judge.folder.release()
    p = np.array(pairs, dtype=float)
    if lookahead_only:
        return {"rows": rows, "pairs": len(p), "rho": {
            "lookahead": float(spearmanr(p[:, 8], p[:, 5]).statistic),
            "lookahead_vs_route_drift": float(spearmanr(p[:, 8], p[:, 6]).statistic)}}
    names = ("bound", "absolute_bound", "divergence_term", "external_term", "co_occupants")
    rho = {k: float(spearmanr(p[:, j], p[:, 5]).statistic) for j, k in enumerate(names)}
    rho["move"] = float(spearmanr(p[:, 7], p[:, 5]).statistic)
    rho["bound_vs_route_drift"] = float(spearmanr(p[:, 0], p[:, 6]).statistic)
    if bound.version >= LOOKAHEAD_VERSION:
        rho["lookahead"] = float(spearmanr(p[:, 8], p[:, 5]).statistic)
    return {"rows": rows, "rho": rho, "pairs": len(p)}


def boot_ci(values: list[float], rng, reps: int = 10_000) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = v[rng.integers(0, v.size, (reps, v.size))].mean(axis=1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def by_bound(row: dict) -> bool:
    """The critic's verdict on the bound alone (the return criterion left out)."""
    below, at = row["plan_bound"] < row["reference_bound"], row["plan_bound"] <= row[
        "reference_bound"]
    return below or (row["negligible"] and at)


def first_update(row: dict) -> float:
    """The drift of the first reled iteration: the update the verdict's bound (judged with the
    untrained learners and their trial update) is about."""
    return row["drift_per_iteration_s"][0]


def gap_stats(seeds: list[dict], rng, keep=lambda row: True,
              verdict=lambda row: row["accepted"],
              drift=lambda row: row["mean_drift_s"]) -> tuple[dict, dict]:
    """Rejected minus accepted mean drift per seed (and the ratio), over the kept rows."""
    gaps, ratios = [], []
    for s in seeds:
        acc = [drift(r) for r in s["rows"] if keep(r) and verdict(r)]
        rej = [drift(r) for r in s["rows"] if keep(r) and not verdict(r)]
        if acc and rej:
            gaps.append(float(np.mean(rej) - np.mean(acc)))
            ratios.append(float(np.mean(rej) / max(np.mean(acc), 1e-12)))
    gap = dict(zip(("mean", "lo", "hi"), boot_ci(gaps, rng), strict=True))
    ratio = dict(zip(("mean", "lo", "hi"), boot_ci(ratios, rng), strict=True))
    return gap | {"seeds_with_both": len(gaps), "per_seed": gaps}, ratio | {"per_seed": ratios}


def summarise(preset: str, seeds: list[dict], args, bound: BoundConfig) -> dict:
    rng = np.random.default_rng(0)
    corr = {k: dict(zip(("mean", "lo", "hi"), boot_ci([s["rho"][k] for s in seeds], rng),
                        strict=True)) | {"per_seed": [s["rho"][k] for s in seeds]}
            for k in seeds[0]["rho"]}
    rows = [r for s in seeds for r in s["rows"]]
    gap, ratio = gap_stats(seeds, rng)
    gap_other, ratio_other = gap_stats(seeds, rng, lambda r: not r["same_as_reference"])
    gap_bound, _ = gap_stats(seeds, rng, verdict=by_bound)
    gap_bound_other, _ = gap_stats(seeds, rng, lambda r: not r["same_as_reference"], by_bound)
    per_iteration = all("drift_per_iteration_s" in r for r in rows)
    gap_first, ratio_first = gap_stats(seeds, rng, drift=first_update) if per_iteration \
        else (None, None)
    v5 = all("bound_accepted" in r for r in rows)
    gap_v5, ratio_v5 = gap_stats(seeds, rng, verdict=lambda r: r["bound_accepted"]) if v5 \
        else (None, None)
    # (after every other draw of rng, so the intervals above stay as they were) the verdict on
    # the plans neither identical to the reference nor too slow: the drift rule alone
    gap_rule, ratio_rule = gap_stats(seeds, rng, lambda r: not r["same_as_reference"]
                                     and not r["too_slow"]) if v5 else (None, None)
    acc_all = [r["mean_drift_s"] for r in rows if r["accepted"]]
    rej_all = [r["mean_drift_s"] for r in rows if not r["accepted"]]
    return {
        "preset": preset, "agents": args.agents, "seeds": args.seeds,
        "seed_list": [args.first_seed + k for k in range(args.seeds)],
        "iterations": args.iterations, "equilibrium_iterations": args.eq_iterations,
        "background_vehicles": load_preset(preset).scenario.n_vehicles - args.agents,
        "bound": bound.model_dump(mode="json"),
        "spearman": corr, "pairs_per_seed": [s["pairs"] for s in seeds],
        "accepted_plans": sum(r["accepted"] for r in rows), "rejected_plans": len(rows) - sum(
            r["accepted"] for r in rows),
        "mean_drift_accepted_s": float(np.mean(acc_all)) if acc_all else None,
        "mean_drift_rejected_s": float(np.mean(rej_all)) if rej_all else None,
        "drift_gap_rejected_minus_accepted_s": gap,
        "drift_ratio_rejected_over_accepted": ratio,
        "drift_gap_without_reference_s": gap_other,
        "drift_ratio_without_reference": ratio_other,
        "drift_gap_bound_only_s": gap_bound,
        "drift_gap_bound_only_without_reference_s": gap_bound_other,
        "drift_gap_first_update_s": gap_first,
        "drift_ratio_first_update": ratio_first,
        **({"drift_gap_v5_verdict_s": gap_v5, "drift_ratio_v5_verdict": ratio_v5} if v5 else {}),
        **({"drift_gap_rule_alone_s": gap_rule, "drift_ratio_rule_alone": ratio_rule}
           if v5 else {}),
        "plans": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["aguascalientes-peak", "monaco-peak"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=5)
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--eq-iterations", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="processes (one (preset, seed) each)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bound-version", type=int, choices=(5, LOOKAHEAD_VERSION), default=5,
                    help="the critic's verdict: 5 (the trial update's bound, training's "
                    "default) or 6 (the lookahead's forecast drift; v5's verdict reported "
                    "beside it)")
    ap.add_argument("--partial", action="store_true", help="summarise the seeds a stopped run "
                    "finished (STEM.seeds.jsonl) into STEM.{json,md}, labelled PARTIAL (give the "
                    "run's settings)")
    ap.add_argument("--with-v5-terms", action="store_true", help="with --bound-version 6: "
                    "also the v5 terms at every iteration (their rank correlations; slower)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--rerender", action="store_true", help="recompute the summaries and tables "
                    "from the saved results JSON (no simulation)")
    ap.add_argument("--update", action="store_true", help="replace only this run's presets in "
                    "the saved results (the others are kept, each with its own run's wall time)")
    ap.add_argument("--out", type=Path, default=None, help="results stem: write (and --update/"
                    "--rerender read) STEM.json and STEM.md instead of "
                    "benchmarks/results/bound_validity.{json,md}")
    args = ap.parse_args()
    if args.rerender:
        return rerender(args)
    if args.partial:
        return summarise_partial(args)
    start = time.perf_counter()
    bound = BoundConfig(gamma=TrainConfig().gamma, version=args.bound_version)
    tasks = [(p, args.first_seed + k, args, bound) for p in args.presets
             for k in range(args.seeds)]
    partial = results_path(args, ".seeds.jsonl")
    if not args.no_save:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("")
    done = []
    with multiprocessing.get_context("spawn").Pool(args.workers) if args.workers > 1 \
            else _Serial() as pool:
        for task, result in zip(tasks, pool.imap(one_seed, tasks, chunksize=1), strict=True):
            done.append(result)  # in task order: the finished seeds are a prefix
            if not args.no_save:
                with partial.open("a") as f:
                    f.write(json.dumps({"preset": task[0], "seed": task[1],
                                        "wall_s": time.perf_counter() - start,
                                        "result": result}) + "\n")
    per = {p: [d for t, d in zip(tasks, done, strict=True) if t[0] == p] for p in args.presets}
    wall = time.perf_counter() - start
    presets = {p: summarise(p, seeds, args, bound) | {"run_wall_s": wall,
                                                       "run_workers": args.workers,
                                                       "run_presets": args.presets}
               for p, seeds in per.items()}
    if args.update and results_path(args, ".json").exists():
        old = json.loads(results_path(args, ".json").read_text())
        presets = {p: with_run(r, old) for p, r in old["presets"].items()} | presets
    result = {"wall_s": wall, "workers": args.workers, "presets": presets}
    save(result, render(presets), args)


class _Serial:
    """``Pool.imap`` in this process (``--workers 1``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def imap(fn, tasks, chunksize: int = 1):
        return map(fn, tasks)


def summarise_partial(args) -> None:
    """``STEM.{json,md}`` from the seeds a stopped run finished (``STEM.seeds.jsonl``, written
    as each seed ends, in task order), labelled PARTIAL with the seeds it holds."""
    lines = [json.loads(x) for x in results_path(args, ".seeds.jsonl").read_text().splitlines()]
    bound = BoundConfig(gamma=TrainConfig().gamma, version=args.bound_version)
    presets = {}
    for p in dict.fromkeys(x["preset"] for x in lines):
        got = [x for x in lines if x["preset"] == p]
        run = argparse.Namespace(agents=args.agents, seeds=len(got), first_seed=got[0]["seed"],
                                 iterations=args.iterations, eq_iterations=args.eq_iterations)
        presets[p] = summarise(p, [x["result"] for x in got], run, bound) | {
            "run_wall_s": got[-1]["wall_s"], "run_workers": args.workers, "run_presets": [p],
            "partial": f"PARTIAL: the run was stopped; seeds {got[0]['seed']}-{got[-1]['seed']} "
                       "finished"}
    md = "\n".join(f"**{r['partial']}.**" for r in presets.values()) + "\n\n" + render(presets)
    save({"wall_s": max(x["wall_s"] for x in lines), "workers": args.workers,
          "presets": presets, "partial": True}, md, args)


def with_run(summary: dict, result: dict) -> dict:
    """``summary`` with its run's wall time (a results file from before ``--update`` holds it
    once, for every preset)."""
    return {"run_wall_s": result["wall_s"], "run_workers": result["workers"],
            "run_presets": list(result["presets"])} | summary


def render(presets: dict) -> str:
    """The markdown tables, each preset with the wall time of the run that measured it."""
    return "\n\n".join(
        table(r) + f"\n\nWall time of this preset's run ({', '.join(r['run_presets'])}): "
        f"{r['run_wall_s']:.0f} s with {r['run_workers']} worker processes."
        for r in presets.values())


def results_path(args, suffix: str) -> Path:
    """``STEM.json`` / ``STEM.md`` of ``--out`` (default ``results/bound_validity``)."""
    stem = args.out if args.out is not None else RESULTS / "bound_validity"
    return stem.with_name(stem.name + suffix)


def save(result: dict, md: str, args) -> None:
    if not args.no_save:
        results_path(args, ".json").parent.mkdir(parents=True, exist_ok=True)
        results_path(args, ".json").write_text(json.dumps(result, indent=1) + "\n")
        results_path(args, ".md").write_text(md + "\n")
    print(json.dumps(result) if args.json else md)


def rerender(args) -> None:
    """Summaries and tables again from the saved per-seed rows and correlations."""
    old = json.loads(results_path(args, ".json").read_text())
    presets = {}
    for p, r in old["presets"].items():
        seeds = [{"rows": [x for x in r["plans"] if x["seed"] == s],
                  "rho": {k: v["per_seed"][i] for k, v in r["spearman"].items()},
                  "pairs": r["pairs_per_seed"][i]} for i, s in enumerate(r["seed_list"])]
        run = argparse.Namespace(agents=r["agents"], seeds=r["seeds"],
                                 first_seed=r["seed_list"][0], iterations=r["iterations"],
                                 eq_iterations=r["equilibrium_iterations"])
        presets[p] = with_run(r, old) | summarise(p, seeds, run, BoundConfig(**r["bound"]))
    result = old | {"presets": presets}
    save(result, render(presets), args)


def table(r: dict) -> str:
    def f(x):
        return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"

    def gap_line(label: str, g: dict, q: dict | None = None) -> str:
        return (f"{label}: rejected - accepted per seed {f(g['mean'])} s [{f(g['lo'])}, "
                f"{f(g['hi'])}] over {g['seeds_with_both']} seeds with both (per seed: "
                + ", ".join(f(x) for x in g["per_seed"]) + ")" + (
                    f"; rejected / accepted {f(q['mean'])} [{f(q['lo'])}, {f(q['hi'])}]"
                    if q else ""))

    seeds = r["seed_list"]
    if r["bound"]["version"] >= LOOKAHEAD_VERSION:
        return lookahead_table(r, f, gap_line)
    lines = [f"Bound validity on {r['preset']}: {r['agents']} learners among "
             f"{r['agents'] + r['background_vehicles']} vehicles, {r['seeds']} seeds "
             f"({seeds[0]}-{seeds[-1]}), {r['iterations']} reled iterations per candidate plan, "
             f"equilibrium {r['equilibrium_iterations']} MSA iterations, gamma "
             f"{r['bound']['gamma']}, accepted when the plan's mean scaled bound is below "
             f"{r['bound']['epsilon']} x the reference's (free-flow shortest paths) or its mean "
             f"Vol_ext (+ move) is at most {r['bound']['negligible']}, bound settings version "
             f"{r['bound']['version']}" + (" (learners' trial update on each plan)"
                                           if r['bound']['version'] >= 5 else ""), "",
             "Spearman rank correlation with the drift of each agent's local environment (the "
             "others' travel times on its plan cells; last row: the scaled bound against the "
             "drift on its own greedy route's cells; mean over seeds, 95% bootstrap interval "
             "over seeds):", "",
             *correlation_lines(r, f, "Critic"),
              "- " + gap_line("All candidates", r["drift_gap_rejected_minus_accepted_s"],
                              r["drift_ratio_rejected_over_accepted"]),
              "- " + gap_line("Leaving out the plans identical to the reference (it fails its "
                              "own strict check by construction)",
                              r["drift_gap_without_reference_s"],
                              r["drift_ratio_without_reference"]),
              "- " + gap_line("The bound alone (verdicts without the return criterion)",
                              r["drift_gap_bound_only_s"]),
              "- " + gap_line("The bound alone, leaving out the plans identical to the "
                              "reference", r["drift_gap_bound_only_without_reference_s"])]
    if r.get("drift_gap_first_update_s"):
        lines.append("- " + gap_line("The first update's drift only (the update the verdict's "
                                     "bound is about)", r["drift_gap_first_update_s"],
                                     r["drift_ratio_first_update"]))
    lines += ["",
              "| seed | plan | accepted | = reference | mean bound | reference | "
              "Vol_ext + move (s) | too slow | travel time (s) | drift (s) | drift per "
              "iteration (s) | route drift (s) |",
              "|---:|---|---|---|---:|---:|---:|---|---:|---:|---|---:|"]
    for p in r["plans"]:
        lines.append(f"| {p['seed']} | {p['plan']} | {p['accepted']} | "
                     f"{p['same_as_reference']} | {p['plan_bound']:.1f} | "
                     f"{p['reference_bound']:.1f} | {p['volatility_s']:.3f} | {p['too_slow']} | "
                     f"{p['mean_travel_time']:.1f} | {p['mean_drift_s']:.3f} | "
                     + (", ".join(f"{x:.3f}" for x in p["drift_per_iteration_s"])
                        if "drift_per_iteration_s" in p else "-")
                     + f" | {p['mean_route_drift_s']:.3f} |")
    return "\n".join(lines)


def correlation_lines(r: dict, f, critic: str) -> list[str]:
    """The rank-correlation table and the critic's accepted / rejected line of a run."""
    lines = ["| predictor | rho | 95% CI | per seed |", "|---|---:|---:|---|"]
    for k, v in r["spearman"].items():
        lines.append(f"| {k} | {f(v['mean'])} | [{f(v['lo'])}, {f(v['hi'])}] | "
                     + ", ".join(f(x) for x in v["per_seed"]) + " |")
    return lines + ["", f"{critic}: {r['accepted_plans']} plans accepted, "
                    f"{r['rejected_plans']} rejected; mean drift accepted "
                    f"{f(r['mean_drift_accepted_s'])} s, rejected "
                    f"{f(r['mean_drift_rejected_s'])} s.", ""]


def lookahead_table(r: dict, f, gap_line) -> str:
    """The tables of a bound version 6 run: the lookahead's verdict, v5's beside it."""
    seeds = r["seed_list"]
    lines = [f"Bound validity on {r['preset']} with bound v6 (the measured lookahead): "
             f"{r['agents']} learners among {r['agents'] + r['background_vehicles']} vehicles, "
             f"{r['seeds']} seeds ({seeds[0]}-{seeds[-1]}), {r['iterations']} reled iterations "
             f"per candidate plan, equilibrium {r['equilibrium_iterations']} MSA iterations, "
             f"gamma {r['bound']['gamma']}. A plan is accepted when the drift the learners' "
             "whole next update with its demonstrations is forecast to cause (PPO on a rollout "
             "drawn from the critic's seed stream plus the expert loss, every minibatch step, "
             "on a copy; the change of the plan cells' travel times when the learners' greedy "
             f"behaviour takes that step) is below {r['bound']['epsilon']} x the reference's "
             "(free-flow shortest paths, same learners and rollout) and its return is not "
             "too low. v5's verdict on the same plans is reported beside it.", "",
             "Spearman rank correlation with the drift of each agent's local environment (the "
             "others' travel times on its plan cells; `lookahead`: the forecast drift of each "
             "iteration's lookahead, pairs pooled over agents, plans and iterations; the v5 "
             "terms only with `--with-v5-terms`; mean over seeds, 95% bootstrap interval over "
             "seeds):", "",
             *correlation_lines(r, f, "Critic (v6)"),
              "- " + gap_line("v6 verdict, all candidates (primary: the ratio)",
                              r["drift_gap_rejected_minus_accepted_s"],
                              r["drift_ratio_rejected_over_accepted"]),
              "- " + gap_line("v6 verdict, leaving out the plans identical to the reference",
                              r["drift_gap_without_reference_s"],
                              r["drift_ratio_without_reference"]),
              "- " + gap_line("v6 verdict, the first update's drift only (the update the "
                              "lookahead forecasts)", r["drift_gap_first_update_s"],
                              r["drift_ratio_first_update"]),
              "- " + gap_line("v5's verdict on the same plans (descriptive)",
                              r["drift_gap_v5_verdict_s"], r["drift_ratio_v5_verdict"]),
              *(["- " + gap_line("v6 verdict on the plans neither identical to the reference "
                                 "nor too slow, i.e. the drift rule alone (descriptive, added "
                                 "after the run)", r["drift_gap_rule_alone_s"],
                                 r["drift_ratio_rule_alone"])]
                if "drift_gap_rule_alone_s" in r else []),
              "", "| seed | plan | accepted (v6) | accepted (v5) | = reference | forecast "
              "drift (s) | reference's (s) | v5 mean bound | v5 reference | Vol_ext + move (s) "
              "| too slow | travel time (s) | drift (s) | drift per iteration (s) |",
              "|---:|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for p in r["plans"]:
        lines.append(f"| {p['seed']} | {p['plan']} | {p['accepted']} | {p['bound_accepted']} | "
                     f"{p['same_as_reference']} | {p['lookahead_drift_s']:.3f} | "
                     f"{p['reference_lookahead_drift_s']:.3f} | {p['plan_bound']:.1f} | "
                     f"{p['reference_bound']:.1f} | {p['volatility_s']:.3f} | {p['too_slow']} | "
                     f"{p['mean_travel_time']:.1f} | {p['mean_drift_s']:.3f} | "
                     + ", ".join(f"{x:.3f}" for x in p["drift_per_iteration_s"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
