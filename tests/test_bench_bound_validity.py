"""benchmarks/bound_validity.py and bound_diagnosis.py: the first update's drift beside the mean
over updates, merging one preset's re-run into the saved results, the diagnosis summary and
its refusal of the hold-out seeds."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
from bench_module import load_benchmark  # tests/ is on sys.path

bv = load_benchmark("bound_validity")
sys.modules.setdefault("bound_validity", bv)  # bound_diagnosis imports it by its script name
bd = load_benchmark("bound_diagnosis")


def plan(seed: int, name: str, accepted: bool, drifts: list[float] | None,
         mean: float | None = None) -> dict:
    row = {"seed": seed, "plan": name, "accepted": accepted, "same_as_reference": False,
           "negligible": False, "volatility_s": 1.0, "plan_bound": 20.0 if accepted else 30.0,
           "reference_bound": 25.0, "too_slow": False, "mean_travel_time": 150.0,
           "mean_drift_s": mean if mean is not None else sum(drifts) / len(drifts),
           "mean_route_drift_s": 0.5}
    if drifts is not None:
        row["drift_per_iteration_s"] = drifts
    return row


def seeds(per_iteration: bool = True) -> list[dict]:
    # seed 0: the accepted plan drifts less in the first update, more over both (it keeps
    # moving in the second); seed 1: less in both
    d = (lambda x: x) if per_iteration else (lambda x: None)
    return [{"rows": [plan(0, "a", True, d([0.2, 3.0]), 1.6), plan(0, "r", False,
                                                                    d([1.0, 0.0]), 0.5)],
             "rho": {"bound": 0.5}, "pairs": 4},
            {"rows": [plan(1, "a", True, d([0.1, 0.1]), 0.1), plan(1, "r", False,
                                                                    d([0.5, 0.3]), 0.4)],
             "rho": {"bound": 0.6}, "pairs": 4}]


def summary(preset: str = "aguascalientes-peak", per_iteration: bool = True) -> dict:
    run = argparse.Namespace(agents=30, seeds=2, first_seed=5, iterations=2, eq_iterations=2)
    return bv.summarise(preset, seeds(per_iteration), run, bv.BoundConfig(version=5))


def test_first_update_gap_is_reported_beside_the_mean_over_updates():
    r = summary()
    assert r["drift_gap_rejected_minus_accepted_s"]["per_seed"] == pytest.approx([-1.1, 0.3])
    assert r["drift_gap_first_update_s"]["per_seed"] == pytest.approx([0.8, 0.4])
    assert r["drift_gap_first_update_s"]["mean"] == pytest.approx(0.6)
    md = bv.table(r | {"run_wall_s": 1.0, "run_workers": 1, "run_presets": ["x"]})
    assert "The first update's drift only" in md
    assert "| 0 | a | True | False | 20.0 | 25.0 | 1.000 | False | 150.0 | 1.600 | 0.200, 3.000 |" \
        in md


def test_results_without_per_iteration_drift_still_render():
    r = summary(per_iteration=False)
    assert r["drift_gap_first_update_s"] is None
    md = bv.table(r)
    assert "first update" not in md and "| 1.600 | - | 0.500 |" in md


def test_update_keeps_the_other_presets_with_their_own_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bv, "RESULTS", tmp_path)
    old = {"wall_s": 3495.0, "workers": 2,
           "presets": {"aguascalientes-peak": summary(), "monaco-peak": summary("monaco-peak")}}
    (tmp_path / "bound_validity.json").write_text(json.dumps(old))
    bv.rerender(argparse.Namespace(no_save=False, json=False, out=None))
    md = (tmp_path / "bound_validity.md").read_text()
    assert md.count("Wall time of this preset's run (aguascalientes-peak, monaco-peak): 3495 s "
                    "with 2 worker processes.") == 2
    new = bv.with_run(summary(), old) | {"run_wall_s": 1200.0, "run_workers": 1,
                                         "run_presets": ["aguascalientes-peak"]}
    merged = {p: bv.with_run(r, old) for p, r in old["presets"].items()} | {
        "aguascalientes-peak": new}
    text = bv.render(merged)
    assert "(aguascalientes-peak): 1200 s with 1 worker processes." in text
    assert "(aguascalientes-peak, monaco-peak): 3495 s with 2 worker processes." in text


def test_out_writes_and_rerenders_its_own_stem_and_leaves_the_default_file(tmp_path,
                                                                           monkeypatch):
    default = tmp_path / "results"
    default.mkdir()
    monkeypatch.setattr(bv, "RESULTS", default)
    held_out = {"wall_s": 1707.0, "workers": 1, "presets": {"aguascalientes-peak": summary()}}
    (default / "bound_validity.json").write_text(json.dumps(held_out))
    fresh = held_out | {"wall_s": 2400.0, "workers": 2}
    stem = tmp_path / "other" / "bound_validity_fresh"
    args = argparse.Namespace(no_save=False, json=False, out=stem)
    bv.save(fresh, bv.render({p: bv.with_run(r, fresh) for p, r in fresh["presets"].items()}),
            args)
    assert json.loads(stem.with_suffix(".json").read_text())["wall_s"] == 2400.0
    assert "2400 s with 2 worker processes" in stem.with_suffix(".md").read_text()
    # --rerender reads the fresh stem, not the held-out file
    stem.with_suffix(".md").unlink()
    bv.rerender(args)
    assert "2400 s with 2 worker processes" in stem.with_suffix(".md").read_text()
    assert json.loads((default / "bound_validity.json").read_text()) == held_out
    assert not (default / "bound_validity.md").exists()


def diag_row(seed: int, name: str, accepted: bool, move: float, drifts: list[float]) -> dict:
    it = {"vol": 0.01, "move": move, "trial_tv_term": 400.0, "co_occupants": 0.3,
          "move_steps": {"8": move}, "realised_move": move, "update_steps": 44,
          "decision_rows": 5000, "realised_tv_term": 9000.0, "rho_move_drift": 0.5,
          "rho_realised_drift": 0.9, "agents": {"vol": [0.01], "move": [move]}}
    return {"preset": "aguascalientes-peak", "seed": seed, "plan": name, "accepted": accepted,
            "bound_version": 5, "too_slow": name == "c",
            "plan_bound": 20.0 if name == "a" else 30.0, "reference_bound": 25.0,
            "iterations": [it | {"drift_s": d} for d in drifts]}


def test_diagnosis_summary_ranks_plans_and_splits_the_updates():
    rows = [diag_row(0, "a", True, 0.001, [0.1, 0.9]),
            diag_row(0, "shortest-path", False, 0.002, [0.2, 0.0]),
            diag_row(0, "c", False, 0.003, [0.3, 0.0])]
    md = bd.render(rows)
    assert md.startswith("Bound diagnosis (`benchmarks/bound_diagnosis.py`, design seeds; bound "
                         "settings version 5)")
    # move ranks the plans exactly as the first update's drift, inversely to the mean
    # (0.5, 0.1, 0.15): Spearman 1 and -0.5; later share 0.9 / 1.5; gaps 0.15 and -0.375;
    # without the shortest-path plan 0.15 - 0.5; the external term alone (1.1 / 1.2 / 1.3,
    # c too slow) accepts a only, as the critic
    assert "| aguascalientes-peak | 0 | 1.00 | 1.00 | 1.00 | -0.50 | -0.50 | -0.50 | 0.60 | " \
           "0.150 | -0.375 | -0.375 | -0.350 | -0.375 |" in md
    # c below the reference's bound but too slow: the bound alone accepts it (b - (a + c) / 2)
    rows[2]["plan_bound"] = 24.0
    assert "| 0.150 | -0.375 | -0.225 | -0.350 | -0.375 |" in bd.render(rows)
    # a's external term above the shortest paths' (1.5 > 1.2): it rejects every plan
    rows[0]["iterations"][0]["agents"]["move"] = [0.005]
    assert "| 0.150 | -0.375 | -0.225 | -0.350 | - |" in bd.render(rows)
    assert md.count("| aguascalientes-peak | 0 | a | True | False |") == 2
    assert "realised move median 0.90 (lowest 0.90), trial move median 0.50, over 3 plans" in md


def test_diagnosis_refuses_the_hold_out_seeds(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bound_diagnosis.py", "--seeds", "0", "6"])
    with pytest.raises(SystemExit, match="hold-out"):
        bd.main()
