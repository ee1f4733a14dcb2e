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

Re-runnable by part: the results json keeps one record per (algorithm, seed) with the commit
and the stationarity-bound version it ran with. ``--algos``/``--seeds`` re-run a subset, whose
records replace the stored ones of the same (algorithm, seed); the table and goals are always
recomputed from all records. Records of another benchmark setting, of other references, or of
an algorithm that trains on critic-filtered demos (``AlgoSpec.demos == "accepted"``) measured
with another bound version are refused (exit 2) instead of mixed in. ``--verify`` re-runs the
given runs and checks that they reproduce the stored records exactly, without replacing them.
``--merge FILE`` takes the given runs' records from another results file of the same settings
and references instead of training them (a part that had to run into its own ``--out``
because this file held records it refuses to keep).

A supplement at another budget (the main table keeps one budget for all):
``--references-from FILE --steps N --out OTHER`` takes the references, hence the
congestion-aware target of ``steps_to_ca``, from ``FILE`` (a results json of the same settings
but ``steps``) instead of recomputing them; the congestion-aware reference is re-simulated and
must match ``FILE``'s exactly (else exit 2: the environment changed). The supplement's table
shows ``FILE``'s steps to congestion-aware beside its own, and its goals compare reled's steps
in ``FILE`` with ippo's here when it has no reled of its own, e.g.
``--algos ippo --steps 90000 --references-from results/sample_efficiency.json
--out results/sample_efficiency_ippo_long.json``.

``--expert SPEC`` sets the expert team's model for the algorithms on demonstrations (default
``offline``, the deterministic planner). A stress test of the critic's filter:
``--expert offline-fallible:P``, the offline planner with injected herding errors in a
fraction P of its group plans (``relied.agents.fallible``); its results go to their own file
(``sample_efficiency_fallible.{md,json}``), each record holding the expert and how the critic
judged every demonstration batch (accepted, rounds, fallback, injected errors).

    python benchmarks/sample_efficiency.py [--algos reled,bc] [--seeds 0,1,2,3,4]
        [--steps 30000] [--workers 2] [--expert offline-fallible:0.4] [--verify] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relied.agents.clients import ModelError, check_spec, describe
from relied.agents.fallible import parse_fallible
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.equilibrium import EquilibriumPolicy
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.rollout import run_episode
from relied.experts.bound import BOUND_VERSION
from relied.rl.config import ALGO_SPECS, TrainConfig
from relied.rl.demos import expert_team_demos, team_config
from relied.rl.policy import TrainedPolicy
from relied.rl.run_folder import read_metrics
from relied.rl.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
ALGOS = "reled,reled-nofilter,reled-fixed,leed,ippo,mappo,bc"
REFS = ("shortest-path", "congestion-aware", "equilibrium")
#: what every record of one results file shares; records of other settings are not merged
SETTINGS = ("preset", "other", "steps", "demo_scenarios", "eval_seeds", "eq_iterations",
            "expert")
#: settings older results files do not name, with the value they were measured with
IMPLIED = {"expert": "offline"}
#: a run's figures: what --verify compares (not its folder, wall time or load)
FIGURES = ("auc", "steps_to_ca", "heldout", "other", "curve")


class ResultsError(ValueError):
    """Stored results that cannot be merged with this run (one line: what and what to do)."""


def bound_dependent(algo: str) -> bool:
    """Whether ``algo`` trains on demos the stationarity critic filtered, so its figures
    depend on the bound's version."""
    return ALGO_SPECS[algo].demos == "accepted"


def load_stored(path: Path) -> dict | None:
    """The stored results (None if there are none); a file without per-run records is
    refused: it can only be replaced by a full run."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"'{path}' cannot be read ({type(exc).__name__}); move it aside "
                           "and run every algorithm") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("records"), list):
        raise ResultsError(f"'{path}' has no per-run records (older format): re-run every "
                           "algorithm and seed (no --algos/--seeds) to replace it")
    return stored


def kept_records(stored: dict | None, settings: dict, jobs: list[tuple[str, int]],
                 bound_version: int = BOUND_VERSION) -> list[dict]:
    """The stored records this run keeps (those whose (algo, seed) it does not re-run),
    refused with :class:`ResultsError` if they cannot stand beside its new records: another
    setting, or a critic-filtered algorithm measured with another bound version."""
    if stored is None:
        return []
    rerun = set(jobs)
    kept = [r for r in stored["records"] if (r["algo"], r["seed"]) not in rerun]
    if kept:
        check_settings(stored, settings)
        check_bound(kept, bound_version)
    return kept


def check_settings(stored: dict, settings: dict, skip: tuple[str, ...] = ()) -> None:
    """Refuse stored records of another benchmark setting (budget, presets, trips); ``skip``:
    settings that may differ."""
    for k in SETTINGS:
        if k in skip:
            continue
        if stored_setting(stored, k) != stored_setting(settings, k):
            raise ResultsError(f"stored records were measured with {k}="
                               f"{stored_setting(stored, k)}, this "
                               f"run has {k}={stored_setting(settings, k)}: use the same "
                               "settings or re-run "
                               "every algorithm and seed")


def stored_setting(stored: dict, key: str):
    """A setting of stored results or of a run (older files imply the ones they do not
    name)."""
    return stored.get(key, IMPLIED.get(key))


def results_path(expert: str) -> Path:
    """The default results json of an expert: the offline planner's is the main table."""
    if expert == "offline":
        return RESULTS / "sample_efficiency.json"
    if parse_fallible(expert) is not None:
        return RESULTS / "sample_efficiency_fallible.json"
    return RESULTS / f"sample_efficiency_{''.join(c if c.isalnum() else '_' for c in expert)}.json"


def check_bound(records: list[dict], bound_version: int = BOUND_VERSION) -> None:
    """Refuse records of critic-filtered algorithms measured with another bound version."""
    stale: dict[str, list[int]] = {}
    for r in records:
        if bound_dependent(r["algo"]) and r.get("bound_version") != bound_version:
            stale.setdefault(r["algo"], []).append(r["seed"])
    if stale:
        which = "; ".join(f"{a} seeds {','.join(map(str, sorted(s)))}"
                          for a, s in stale.items())
        raise ResultsError(f"stored records of critic-filtered algorithms were measured with "
                           f"another bound version than this code's v{bound_version} ({which})"
                           f": re-run them (--algos {','.join(stale)})")


def merge(kept: list[dict], new: list[dict], bound_version: int = BOUND_VERSION) -> list[dict]:
    """All records, new ones replacing stored ones of the same (algo, seed), in ALGOS order
    then seed order."""
    by_key = {(r["algo"], r["seed"]): r for r in kept}
    by_key.update({(r["algo"], r["seed"]): r for r in new})
    records = list(by_key.values())
    check_bound(records, bound_version)
    order = {a: i for i, a in enumerate(ALGO_SPECS)}
    return sorted(records, key=lambda r: (order.get(r["algo"], len(order)), r["seed"]))


def same_figures(stored: dict, new: dict) -> list[str]:
    """The figures in which ``new`` differs from ``stored`` (exactly, after a JSON round
    trip); empty when the run reproduces."""
    a, b = json.loads(json.dumps(stored)), json.loads(json.dumps(new))
    return [k for k in FIGURES if a.get(k) != b.get(k)]


def interval(values, reps: int = 2000) -> list[float] | None:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return None
    means = v[np.random.default_rng(0).integers(0, v.size, (reps, v.size))].mean(axis=1)
    return [float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def references(scenarios, net, eq_iterations: int,
               names: tuple[str, ...] = REFS) -> dict[str, dict[str, float]]:
    """Mean travel time, return and arrival of the references ``names`` over ``scenarios``."""
    out = {}
    for name in names:
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


def code_commit() -> str | None:
    """The commit of the checked-out code (``+dirty`` when relied/ or this file differ from
    it); None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "relied", "benchmarks/sample_efficiency.py"], check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def demo_verdicts(run_dir: Path) -> dict[str, int] | None:
    """How the critic judged the run's demonstration batches: batches, accepted, accepted in
    the first round, best-bound fallbacks (None: the run has no demos)."""
    metas = [json.loads(f.read_text()) for f in sorted(Path(run_dir).glob("demos/*/*.json"))]
    if not metas:
        return None
    extra = [m.get("extra") or {} for m in metas]
    return {"batches": len(metas), "accepted": sum(bool(m["accepted"]) for m in metas),
            "first_round": sum(e.get("accepted_round") == 1 for e in extra),
            "fallback": sum(bool(e.get("fallback")) for e in extra)}


def demo_batches(run_dir: Path) -> list[dict]:
    """Every demonstration batch of the run as the critic judged it: scenario, accepted,
    rounds, accepted round, fallback, the saved plan's executed mean travel time, and for a
    fallible expert the herding errors it injected (``{round, agents, kind}`` per group plan)
    and the saved plan's herding agents."""
    rows = []
    for f in sorted(Path(run_dir).glob("demos/*/*.json")):
        m = json.loads(f.read_text())
        e = m.get("extra") or {}
        rows.append({"scenario_seed": (m.get("scenario") or {}).get("seed"),
                     "variant": e.get("variant"), "accepted": bool(m["accepted"]),
                     "rounds": m.get("rounds"), "accepted_round": e.get("accepted_round"),
                     "fallback": bool(e.get("fallback")),
                     "mean_travel_time": (m.get("metrics") or {}).get("mean_travel_time"),
                     "bound_version": (e.get("bound") or {}).get("version"),
                     "injected": e.get("injected"),
                     "herding_agents": e.get("herding_agents")})
    return rows


def judged_version(batches: list[dict]) -> int | None:
    """The bound version the critic judged a run's demonstration batches with (what each
    batch's metadata records: 5 when the learners' trial update was used); the code's version
    for a run without demos; None when the batches disagree or do not say."""
    versions = {b.get("bound_version") for b in batches}
    if not batches:
        return BOUND_VERSION
    return versions.pop() if len(versions) == 1 else None


def train_one(job) -> dict:
    """Train one (algorithm, seed) and evaluate its greedy policy on the shared trips."""
    algo, seed, args, target, held, away, commit = job
    torch.set_num_threads(1)
    net, other_net = load_city(held[0].city), load_city(away[0].city)
    cfg = TrainConfig(preset=args.preset, algo=algo, seed=seed, total_steps=args.steps,
                      demo_scenarios=args.demo_scenarios, heldout_seeds=0)
    provider = None
    if args.expert != "offline" and cfg.uses_experts:
        # TrainConfig.experts does not take this spec: the provider is passed in
        # (config.json says "offline"; the demos' metadata name the expert)
        provider = expert_team_demos(args.expert, cfg.demo_batches, cfg.spec.demos == "accepted",
                                     False, cfg.ollama_host, cfg.timeout_s, team_config(cfg))
    trainer = Trainer.create(cfg, args.runs_dir, provider=provider, progress=False)
    summary = trainer.run()
    rows = read_metrics(trainer.run_dir)
    h, o = greedy(trainer.model, held, net), greedy(trainer.model, away, other_net)
    print(f"{algo} seed {seed}: auc {auc(rows, args.steps):.2f}, held-out "
          f"{h['mean_travel_time']:.1f} s ({h['arrival_rate']:.2f}), other "
          f"{o['mean_travel_time']:.1f} s, {summary['wall_s']:.0f} s", flush=True)
    batches = demo_batches(trainer.run_dir)
    return {"algo": algo, "seed": seed, "preset": args.preset, "steps": args.steps,
            "expert": args.expert, "commit": commit,
            "bound_version": judged_version(batches),
            "run_dir": summary["run_dir"],
            "wall_s": summary["wall_s"], "load_1min": round(os.getloadavg()[0], 2),
            "demos": demo_verdicts(trainer.run_dir), "demo_batches": batches,
            "auc": auc(rows, args.steps), "steps_to_ca": steps_to(rows, target),
            "heldout": h, "other": o, "curve": [(r["env_steps"], r["return"]) for r in rows]}


def summarise(records: list[dict], refs: dict) -> tuple[dict, dict]:
    """Per algorithm mean [95% interval] of every figure over its records, and the goals."""
    eq_h = refs["heldout"]["equilibrium"]["mean_travel_time"]
    table = {}
    for algo in dict.fromkeys(r["algo"] for r in records):
        rs = [r for r in records if r["algo"] == algo]
        table[algo] = {
            "seeds": [r["seed"] for r in rs],
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
    return table, goals


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
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
    p.add_argument("--expert", default="offline",
                   help="expert team model for the algorithms on demonstrations: 'offline' "
                   "(the deterministic planner, not an LLM), 'offline-fallible:P[:KIND]' (the "
                   "offline planner with injected herding errors in a fraction P of its group "
                   "plans, seeded, KIND mixed|freeflow|forecast: a stress test of the critic's "
                   "filter; results in sample_efficiency_fallible.json) or 'ollama:<model>'")
    p.add_argument("--out", type=Path, default=None,
                   help="results json (the .md and .png are written beside it; default "
                   "sample_efficiency.json for the offline planner, "
                   "sample_efficiency_fallible.json for offline-fallible:P)")
    p.add_argument("--recompute-references", action="store_true",
                   help="recompute the references although the stored ones have this setting")
    p.add_argument("--verify", action="store_true", help="re-run the given runs and check "
                   "they reproduce the stored records exactly (records are not replaced)")
    p.add_argument("--merge", type=Path, default=None, metavar="FILE",
                   help="instead of training, take the records of --algos/--seeds from FILE, "
                   "a results json of the same settings and references (e.g. a part run into "
                   "its own --out while this file held records it would refuse to keep)")
    p.add_argument("--references-from", type=Path, default=None, metavar="FILE",
                   help="a supplement at another --steps: take the references (the "
                   "congestion-aware target of steps to congestion-aware) from FILE, a results "
                   "json of the same settings but the budget, instead of recomputing them (the "
                   "congestion-aware one is re-simulated and must match); its table and goals "
                   "show FILE's steps beside this file's; --out must be another file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    try:
        check_spec(args.expert)
    except ModelError as exc:
        fail(str(exc))
    args.out = args.out or results_path(args.expert)
    if args.references_from is not None and args.references_from.resolve() == args.out.resolve():
        fail(f"--references-from {args.references_from} is also --out: write the supplement "
             "to another file (--out)")
    algos = args.algos.split(",")
    unknown = [a for a in algos if a not in ALGO_SPECS]
    if unknown:
        fail(f"unknown algorithm {unknown[0]!r}; use some of {ALGOS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    settings = {"preset": args.preset, "other": args.other, "steps": args.steps,
                "demo_scenarios": args.demo_scenarios, "eval_seeds": eval_seeds,
                "eq_iterations": args.eq_iterations, "expert": args.expert}
    wanted = [(a, s) for a in algos for s in seeds]
    try:
        stored = load_stored(args.out)
        if args.verify:
            if stored is None:
                raise ResultsError(f"--verify needs stored records in '{args.out}'")
            have = {(r["algo"], r["seed"]): r for r in stored["records"]}
            missing = [k for k in wanted if k not in have]
            if missing:
                raise ResultsError(f"no stored record of {missing[0][0]} seed {missing[0][1]}"
                                   " to verify")
            check_settings(stored, settings)
            kept = []
        else:
            kept = kept_records(stored, settings, wanted)
    except ResultsError as exc:
        fail(str(exc))
    commit = code_commit()
    preset, other = load_preset(args.preset).scenario, load_preset(args.other).scenario
    net, other_net = load_city(preset.city), load_city(other.city)
    held = [preset.model_copy(update={"seed": s}) for s in eval_seeds]
    away = [other.model_copy(update={"seed": s, "n_agents": preset.n_agents,
                                     "background_share": other.background_share})
            for s in eval_seeds]
    same_setting = stored is not None and all(stored_setting(stored, k) == settings[k]
                                              for k in SETTINGS)
    base = None
    if args.references_from is not None:
        try:
            base = base_results(args.references_from, settings)
            if same_setting and (kept or args.verify) and \
                    stored["references"] != base["references"]:
                raise ResultsError(f"the references of '{args.out}' differ from those of "
                                   f"'{args.references_from}': use another --out")
        except ResultsError as exc:
            fail(str(exc))
        refs, refs_commit = base["references"], base.get("references_commit")
        ca = references(held, net, args.eq_iterations, ("congestion-aware",))
        if ca["congestion-aware"] != refs["heldout"]["congestion-aware"]:
            fail(f"the congestion-aware reference re-simulated now ({json.dumps(ca)}) differs "
                 f"from the one of '{args.references_from}' (the environment changed): "
                 "re-run that file's references first")
        print("congestion-aware reference: identical to "
              f"{args.references_from}'s", flush=True)
    elif same_setting and not args.recompute_references:
        refs, refs_commit = stored["references"], stored.get("references_commit")
    else:
        refs = {"heldout": references(held, net, args.eq_iterations),
                "other": references(away, other_net, args.eq_iterations)}
        refs_commit = commit
        if same_setting and (kept or args.verify) and refs != stored["references"]:
            fail("the references differ from the stored ones (the environment changed): "
                 "re-run every algorithm and seed")
        if args.verify:
            print("references: identical to the stored ones", flush=True)
            stored["references_reproduced_at"] = commit
    print("references", json.dumps(refs), flush=True)
    target = refs["heldout"]["congestion-aware"]["mean_return"]
    jobs = [(algo, seed, args, target, held, away, commit) for algo, seed in wanted]
    if args.merge is not None:
        try:
            new = merged_records(args.merge, settings, refs, wanted)
        except ResultsError as exc:
            fail(str(exc))
    elif args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            new = pool.map(train_one, jobs)
    else:
        new = [train_one(job) for job in jobs]
    if args.verify:
        verify(stored, new, args, commit)
        return
    records = merge(kept, new)
    table, goals = summarise(records, refs)
    beside = None
    if base is not None:
        beside, goals = supplement(base, args.references_from, table, goals)
    out = {"benchmark": "sample_efficiency", **settings, "expert_label": describe(args.expert),
           "error_rate": (parse_fallible(args.expert) or (None,))[0],
           "bound_version": BOUND_VERSION,
           "python": platform.python_version(),
           "machine": f"{platform.machine()}, 2 cores shared with other work",
           "references": refs, "references_commit": refs_commit,
           "references_reproduced_at": (stored or {}).get("references_reproduced_at")
           if refs_commit == (stored or {}).get("references_commit") else None,
           "last_run": {"algos": algos, "seeds": seeds, "commit": commit,
                        "workers": args.workers, "wall_s": time.perf_counter() - start,
                        "load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                        "merged_from": str(args.merge) if args.merge else None},
           "reproduced": [c for c in (stored or {}).get("reproduced", [])
                          if any((r["algo"], r["seed"]) == (c["algo"], c["seed"])
                                 for r in kept)],
           "references_from": str(args.references_from) if base is not None else None,
           "beside": beside, "table": table, "goals": goals, "records": records}
    write(out, args.out)
    print(json.dumps({k: v for k, v in out.items() if k != "records"}) if args.json
          else markdown(out))


def base_results(path: Path, settings: dict) -> dict:
    """The results file a supplement takes its references from: stored, with the same
    settings but ``steps``."""
    base = load_stored(path)
    if base is None:
        raise ResultsError(f"--references-from {path}: no such results file")
    check_settings(base, settings, skip=("steps",))
    return base


def supplement(base: dict, path: Path, table: dict, goals: dict) -> tuple[dict, dict]:
    """A supplement's view of its base file: the base's steps to congestion-aware per
    algorithm (at its budget), and the goals with reled's steps taken from the base when the
    supplement has no reled (``reled_over_ippo_steps``: the ratio of the means over the runs
    that reach it)."""
    beside = {"file": str(path), "steps": base["steps"],
              "table": {a: {k: t[k] for k in ("seeds", "steps_to_ca", "reached_ca")}
                        for a, t in base["table"].items()}}
    goals = dict(goals)
    if "ippo" in table and "reled" not in table and "reled" in base["table"]:
        s_r, s_i = base["table"]["reled"]["steps_to_ca"], table["ippo"]["steps_to_ca"]
        goals["ca_in_third_of_ippo_steps"] = bool(s_r and s_i and s_r[0] <= s_i[0] / 3)
        goals["reled_over_ippo_steps"] = s_r[0] / s_i[0] if s_r and s_i else None
    return beside, goals


def merged_records(path: Path, settings: dict, refs: dict,
                   wanted: list[tuple[str, int]]) -> list[dict]:
    """The records of ``wanted`` (algorithm, seed) stored in the results file ``path``,
    refused unless it has the same settings and references (its records are then what a run
    here would have written)."""
    other = load_stored(path)
    if other is None:
        raise ResultsError(f"--merge {path}: no such results file")
    check_settings(other, settings)
    if other["references"] != refs:
        raise ResultsError(f"--merge {path}: its references differ from this file's; re-run "
                           "those records here")
    have = {(r["algo"], r["seed"]): r for r in other["records"]}
    missing = [k for k in wanted if k not in have]
    if missing:
        raise ResultsError(f"--merge {path}: no record of {missing[0][0]} seed "
                           f"{missing[0][1]}; give the --algos/--seeds it holds")
    return [have[k] for k in wanted]


def verify(stored: dict, new: list[dict], args, commit: str | None) -> None:
    """Compare re-runs with the stored records; note the exact reproductions in the results
    file (exit 1 when any run differs)."""
    have = {(r["algo"], r["seed"]): r for r in stored["records"]}
    checks = [{"algo": r["algo"], "seed": r["seed"], "commit": commit,
               "differs_in": same_figures(have[(r["algo"], r["seed"])], r)} for r in new]
    for c in checks:
        print(f"{c['algo']} seed {c['seed']}: " + (f"differs in {', '.join(c['differs_in'])}"
                                                   if c["differs_in"] else "identical"))
    ok = [c for c in checks if not c["differs_in"]]
    if ok:
        stored["reproduced"] = stored.get("reproduced", []) + [
            {k: c[k] for k in ("algo", "seed", "commit")} for c in ok]
        write(stored, args.out)
    if len(ok) < len(checks):
        raise SystemExit(1)


def write(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    path.with_suffix(".md").write_text(markdown(out))
    plot(out["records"], path.with_suffix(".png"), out["preset"])


def markdown(out: dict) -> str:
    def ci(v, f=1.0, d=1):
        return "n/a" if v is None else f"{v[0] * f:.{d}f} [{v[1] * f:.{d}f}, {v[2] * f:.{d}f}]"

    refs = out["references"]
    expert = stored_setting(out, "expert")
    flag = "" if expert == "offline" else f" --expert {expert}"
    if out.get("references_from"):
        flag += (f" --algos {','.join(out['table'])} --steps {out['steps']} --references-from "
                 f"{out['references_from']} --out <this file>")
    lines = [f"Preset `{out['preset']}` ({out['steps']:,} env steps per run); held-out trips "
             f"seeds {out['eval_seeds']}, other city `{out['other']}`. Mean [95% bootstrap "
             f"interval] over seeds. Command: `python benchmarks/sample_efficiency.py{flag}` "
             "(a part: `--algos A,B`, merged into the stored per-run records)", "",
             f"Expert team model: `{expert}` ({describe(expert)}).", "",
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
                     f"{ci(t['steps_to_ca'], d=0)} | {t['reached_ca']}/{len(t['seeds'])} |")
    if out.get("beside"):
        b = out["beside"]
        lines += ["", f"Beside `{b['file']}` ({b['steps']:,} env steps per run, the same "
                  "references and target):", "",
                  "| policy | steps to congestion-aware | runs reaching |", "|---|---|---|"]
        lines += [f"| {a} | {ci(t['steps_to_ca'], d=0)} | {t['reached_ca']}/{len(t['seeds'])} |"
                  for a, t in b["table"].items()]
    lines += ["", "Goals: " + (", ".join(f"{k}: {v}" for k, v in out["goals"].items())
                               or "n/a"), "",
              f"Records (code's bound version v{out['bound_version']}; algorithms on "
              "critic-filtered demos must match it):", "",
              "| algo | seeds | commit | bound version | critic-filtered demos | demo batches "
              "accepted (in the first round) | load (1 min) |",
              "|" + "---|" * 7]
    for algo in out["table"]:
        rs = [r for r in out["records"] if r["algo"] == algo]
        commits = sorted({(r.get("commit") or "not recorded")[:12] for r in rs})
        loads = [r["load_1min"] for r in rs if r.get("load_1min") is not None]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
        versions = sorted({f"v{r.get('bound_version')}" for r in rs})
        demos = [r["demos"] for r in rs if r.get("demos")]
        verdicts = (f"{sum(d['accepted'] for d in demos)}/{sum(d['batches'] for d in demos)} "
                    f"({sum(d['first_round'] for d in demos)})" if demos else "")
        lines.append(f"| {algo} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{', '.join(commits)} | "
                     f"{', '.join(versions)} | "
                     f"{'yes' if bound_dependent(algo) else 'no'} | {verdicts} | {load} |")
    if expert != "offline":
        lines += ["", "Every demonstration batch as the critic judged it (injected: per round, "
                  "the group plans the expert replaced by a herding error, their agents and "
                  "kind; cached: the team's answer came from the expert cache, no chat ran; "
                  "herding agents: agents of the saved plan on an injected route; demo tt: "
                  "the saved plan's executed mean travel time):", "",
                  "| algo | seed | scenario | accepted | rounds | accepted in round | fallback "
                  "| injected | herding agents | demo tt (s) |", "|" + "---|" * 10]
        for r in out["records"]:
            for b in r.get("demo_batches") or []:
                inj = injected_text(b.get("injected"))
                lines.append(f"| {r['algo']} | {r['seed']} | {b['scenario_seed']} | "
                             f"{'yes' if b['accepted'] else 'no'} | {b['rounds']} | "
                             f"{b['accepted_round'] or ''} | {'yes' if b['fallback'] else 'no'}"
                             f" | {inj} | {b.get('herding_agents')} | "
                             + (f"{b['mean_travel_time']:.1f} |"
                                if b.get("mean_travel_time") is not None else " |"))
    if out.get("references_reproduced_at"):
        lines += ["", "References reproduced exactly at "
                  f"{out['references_reproduced_at'][:12]}."]
    if out.get("reproduced"):
        lines += ["", "Reproduced exactly (same seed, identical figures): " + "; ".join(
            f"{c['algo']} seed {c['seed']} at {(c['commit'] or 'unrecorded')[:12]}"
            for c in out["reproduced"])]
    return "\n".join(lines) + "\n"


def injected_text(injected: list[dict] | None) -> str:
    """Per round: group plans replaced, their agents, their kinds (``cached``: None)."""
    if injected is None:
        return "cached"
    rounds: dict[int, list[dict]] = {}
    for i in injected:
        rounds.setdefault(i["round"], []).append(i)
    return "; ".join(f"r{r}: {len(rows)} groups, {sum(i['agents'] for i in rows)} agents, "
                     + "/".join(sorted({i["kind"] for i in rows}))
                     for r, rows in sorted(rounds.items())) or "none"


def plot(records: list[dict], path: Path, preset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algo in dict.fromkeys(r["algo"] for r in records):
        rs = [r for r in records if r["algo"] == algo]
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
