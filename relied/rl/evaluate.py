"""Evaluating a trained run on held-out scenarios, and comparing runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.rollout import run_episode
from relied.rl.config import TrainConfig
from relied.rl.policy import PolicyFileError, TrainedPolicy, load_policy
from relied.rl.run_folder import TrainError, check_city, read_metrics

REFERENCES = ("shortest-path", "congestion-aware", "equilibrium")
#: MSA iterations of the equilibrium reference in evaluations (its gap is reported).
EQUILIBRIUM_ITERATIONS = 10
METRICS = ("mean_return", "mean_travel_time", "p95_travel_time", "arrival_rate")
#: Also reported on SUMO: what SUMO did to the vehicles (never dropped from the metrics).
SUMO_METRICS = ("teleports", "teleported_learners", "removed_vehicles", "missed_decisions")


def latest_run(path: Path) -> Path:
    """``path`` if it is a run folder, else its newest finished run below (by folder name,
    i.e. timestamp), so ``runs/<city>/<algo>/<seed>`` names the latest run of that seed."""
    path = Path(path)
    if not path.is_dir():
        raise TrainError(f"run folder '{path}' does not exist")
    if (path / "config.json").exists():
        return path
    found = sorted(p.parent for p in path.rglob("policy.pt"))
    if not found:
        raise TrainError(f"no finished run (policy.pt) in '{path}'")
    return max(found, key=lambda p: p.name)


def load_run(run_dir: Path, device: torch.device | str = "cpu"):
    """The config and trained model (on ``device``) of a finished run; one-line errors if
    missing or bad."""
    path = latest_run(run_dir) / "policy.pt"
    model, config = load_policy(path, device)
    try:
        return TrainConfig.model_validate(config), model
    except ValidationError as exc:
        raise PolicyFileError(f"policy file '{path}' holds an invalid training config "
                              f"({exc.error_count()} errors); retrain the run") from None


def load_config(run: Path) -> TrainConfig:
    path = Path(run) / "config.json"
    try:
        return TrainConfig.load(path)
    except (OSError, ValueError) as exc:
        raise TrainError(f"run config '{path}' is unreadable or invalid "
                         f"({type(exc).__name__}); restore it or remove the run") from None


def _run_policies(net, cfg: TrainConfig, model, seeds: list[int], city: str,
                  n_agents: int | None, backend: str, sumo_net=None,
                  meso_junctions: str = "control") -> dict[str, dict]:
    """Seed-mean metrics of the trained policy and the references on one backend
    (``meso_junctions``: SUMO meso's junction model, with ``sumo-meso``)."""
    from relied.env.equilibrium import EquilibriumPolicy
    from relied.env.sumo import make_core

    results: dict[str, list[dict[str, float]]] = {name: [] for name in (cfg.algo, *REFERENCES)}
    gaps = []
    for seed in seeds:
        scenario = cfg.scenario(seed=seed, city=city, n_agents=n_agents)
        core = (RoutingCore(net, scenario) if backend == "core"
                else make_core(net, scenario, backend, sumo_net=sumo_net,
                               meso_junctions=meso_junctions))
        results[cfg.algo].append(run_episode(core, TrainedPolicy(model)).metrics)
        for name in REFERENCES:
            policy = (EquilibriumPolicy(iterations=EQUILIBRIUM_ITERATIONS)
                      if name == "equilibrium" else make_policy(name, seed))
            results[name].append(run_episode(core, policy).metrics)
            if name == "equilibrium":
                gaps.append(policy.equilibrium.relative_gap[-1])
        if backend != "core":
            core.close()
    keys = METRICS if backend == "core" else METRICS + SUMO_METRICS
    out = {name: {m: float(np.mean([r[m] for r in rs])) for m in keys}
           for name, rs in results.items()}
    out["equilibrium"]["relative_gap"] = float(np.mean(gaps))
    out[cfg.algo]["vs_equilibrium"] = (out[cfg.algo]["mean_travel_time"]
                                       / out["equilibrium"]["mean_travel_time"] - 1.0)
    return out


def ranking(policies: dict[str, dict]) -> list[str]:
    """Policy names from the shortest to the longest mean travel time."""
    return sorted(policies, key=lambda name: policies[name]["mean_travel_time"])


def gain(policies: dict[str, dict], algo: str) -> float:
    """Relative travel-time gain of ``algo`` over shortest-path (positive: faster)."""
    sp = policies["shortest-path"]["mean_travel_time"]
    return (sp - policies[algo]["mean_travel_time"]) / sp


def backend_report(algo: str, core: dict[str, dict], other: dict[str, dict]) -> dict:
    """Does the ranking of policies on ``other`` match the core's, and how much of the
    learner's gain over shortest-path carries over (gain there / gain in the core)?"""
    g_core, g_other = gain(core, algo), gain(other, algo)
    return {"ranking_core": ranking(core), "ranking_backend": ranking(other),
            "ranking_preserved": ranking(core) == ranking(other),
            "gain_core": g_core, "gain_backend": g_other,
            "gain_carry_over": g_other / g_core if abs(g_core) > 1e-12 else None}


def evaluate_run(run_dir: Path, seeds: list[int], city: str | None = None,
                 n_agents: int | None = None, backend: str = "core",
                 device: torch.device | str = "cpu", meso_junctions: str = "control") -> dict:
    """Greedy trained policy and the reference policies on scenarios of ``seeds`` (and
    ``city``/``n_agents`` if given); metrics averaged over seeds. Without ``city`` the run's
    own city file must still exist with the SHA-256 recorded at training time.

    ``backend`` ``sumo``/``sumo-meso`` evaluates in SUMO and also in the core, and adds
    ``comparison`` (:func:`backend_report`); ``policies`` are the backend's figures;
    ``meso_junctions`` is SUMO meso's junction model (``control`` or ``green-split``, only
    with ``sumo-meso``; docs/sumo.md). The policy runs on ``device`` (any device loads any
    run's ``policy.pt``)."""
    from relied.env.sumo import check_backend, check_meso_junctions

    check_backend(backend)
    if meso_junctions != "control":
        check_meso_junctions(meso_junctions, backend)
    run_dir = latest_run(run_dir)
    cfg, model = load_run(run_dir, device)
    if city is None:
        check_city(cfg, run_dir, "restore it, or pass --city to evaluate on another city/file")
    city = city or cfg.city
    net = load_city(city)
    policies = _run_policies(net, cfg, model, seeds, city, n_agents, "core")
    out = {"run_dir": str(run_dir), "algo": cfg.algo, "trained_city": cfg.city, "city": city,
           "agents": n_agents or cfg.n_agents, "seeds": seeds, "backend": backend,
           "policies": policies}
    if backend != "core":
        from relied.env.cities import city_source
        from relied.env.sumo import load_sumo_network

        source = city_source(city).path
        if source is None:
            raise TrainError(f"city '{city}' has no local OSM file for SUMO's netconvert")
        sumo_net = load_sumo_network(net, source)
        other = _run_policies(net, cfg, model, seeds, city, n_agents, backend, sumo_net,
                              meso_junctions)
        if backend == "sumo-meso":
            out["meso_junctions"] = meso_junctions
        out.update(policies=other, core_policies=policies,
                   comparison=backend_report(cfg.algo, policies, other),
                   sumo_network=sumo_net.report.summary())
    return out


def _final(rows: list[dict[str, float]], key: str, last: int) -> float:
    return float(np.mean([r[key] for r in rows[-last:]]))


def steps_to_reach(rows: list[dict[str, float]], target: float, window: int = 3) -> float | None:
    """First env-step count where the running mean (``window`` iterations) of the training
    return reaches ``target``; ``None`` if never."""
    ret = np.array([r["return"] for r in rows])
    for i in range(len(ret)):
        if ret[max(0, i - window + 1): i + 1].mean() >= target:
            return rows[i]["env_steps"]
    return None


def mean_curve(runs: list[list[dict[str, float]]], points: int = 60) -> list[dict[str, float]]:
    """The seed-mean of the runs' training return on a common env-step grid spanning only
    the steps every run has logged (interpolation, never extrapolation)."""
    lo = max(r[0]["env_steps"] for r in runs)
    hi = min(r[-1]["env_steps"] for r in runs)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
    ret = np.mean([np.interp(grid, [x["env_steps"] for x in r], [x["return"] for x in r])
                   for r in runs], axis=0)
    return [{"env_steps": float(s), "return": float(v)} for s, v in zip(grid, ret, strict=True)]


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders named directly or found below the given folders."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise TrainError(f"run folder '{p}' does not exist")
        found = [p] if (p / "metrics.csv").exists() else \
            sorted(c.parent for c in p.rglob("metrics.csv"))
        if not found:
            raise TrainError(f"no run with metrics.csv in '{p}'")
        runs.extend(found)
    return runs


PROBLEM = ("city", "n_agents", "horizon_s", "departure_window_s")


def _problem_check(configs: dict[Path, TrainConfig]) -> str:
    """The one city all runs share; :class:`TrainError` naming the runs' cities (or agents,
    horizons) when they differ: their returns are not comparable."""
    for field in PROBLEM:
        counts: dict[object, int] = {}
        for cfg in configs.values():
            counts[getattr(cfg, field)] = counts.get(getattr(cfg, field), 0) + 1
        if len(counts) > 1:
            listed = ", ".join(f"{field}={v} ({n} runs)" for v, n in counts.items())
            raise TrainError(f"the runs have different {field}: {listed}; compare runs of one "
                             "problem at a time")
    return next(iter(configs.values())).city


def is_finished(run: Path) -> bool:
    return (Path(run) / "summary.json").is_file() and (Path(run) / "policy.pt").is_file()


def compare_runs(paths: list[Path], out: Path, include_unfinished: bool = False) -> dict:
    """Group runs of one problem (city, agents, horizon; mixing them is refused) by algorithm
    and ablation settings (:attr:`TrainConfig.label`), draw their learning curves into ``out``
    and tabulate final figures and the env steps the seed-mean learning curve of each group
    needs to reach IPPO's final training return, with the number of single runs that reach
    it. Unfinished runs (no ``summary.json``/``policy.pt``) are listed under ``unfinished``
    and pooled only with ``include_unfinished``. "Final" and running means are over the last
    ``max(3, train_seeds)`` iterations (a full cycle of training scenarios); the seed-mean
    curve is smoothed over 5 grid points."""
    from relied.rl.plots import compare_curves

    found = find_runs(paths)
    configs = {run: load_config(run) for run in found}
    city = _problem_check(configs)
    groups: dict[str, list[tuple[Path, list[dict[str, float]]]]] = {}
    unfinished, window = [], 3
    for run in found:
        cfg, rows = configs[run], read_metrics(run)
        done = is_finished(run)
        if not done:
            unfinished.append({"run_dir": str(run), "algo": cfg.label,
                               "env_steps": rows[-1]["env_steps"] if rows else 0.0,
                               "total_steps": cfg.total_steps})
        if rows and (done or include_unfinished):
            groups.setdefault(cfg.label, []).append((run, rows))
            window = max(window, cfg.train_seeds or 1)  # a full cycle of fixed scenarios
    if not groups:
        raise TrainError("none of the given runs has logged an iteration yet" if not unfinished
                         or include_unfinished else
                         f"none of the given runs has finished ({len(unfinished)} unfinished); "
                         "pass --include-unfinished to compare them as they are")
    pending = {u["run_dir"] for u in unfinished}
    ippo = groups.get("ippo")
    target = (float(np.mean([_final(rows, "return", window) for _, rows in ippo]))
              if ippo else None)
    table = []
    for algo, runs in groups.items():
        summaries = [_summary(run) for run, _ in runs]
        reach = [steps_to_reach(rows, target, window) if target is not None else None
                 for _, rows in runs]
        finals = [_final(rows, "return", window) for _, rows in runs]
        table.append({
            "algo": algo, "runs": len(runs),
            "unfinished": sum(str(run) in pending for run, _ in runs),
            "final_return": float(np.mean(finals)),
            "final_return_std": float(np.std(finals)),
            "final_travel_time": float(np.mean([_final(rows, "mean_travel_time", window)
                                                for _, rows in runs])),
            "greedy_travel_time": _mean(s.get("mean_travel_time") for s in summaries),
            "greedy_arrival_rate": _mean(s.get("arrival_rate") for s in summaries),
            "env_steps": float(np.mean([rows[-1]["env_steps"] for _, rows in runs])),
            "steps_to_ippo_final": (steps_to_reach(mean_curve([rows for _, rows in runs]),
                                                   target, 5) if target is not None else None),
            "reached_ippo_final": sum(r is not None for r in reach),
            "wall_s": float(np.mean([rows[-1]["wall_s"] for _, rows in runs])),
        })
    compare_curves({a: [rows for _, rows in runs] for a, runs in groups.items()}, out,
                   title=f"{city}: learning curves (mean and min-max over seeds)")
    return {"plot": str(out), "city": city, "ippo_final_return": target, "algos": table,
            "unfinished": unfinished}


def _summary(run: Path) -> dict:
    path = run / "summary.json"
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise TrainError(f"run summary '{path}' is corrupt ({type(exc).__name__}); delete it "
                         "and resume the run to rewrite it") from None
    return data if isinstance(data, dict) else {}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
