"""benchmarks/sample_efficiency.py --references-from: a supplement at another budget takes the
main file's references (the congestion-aware target), re-simulates only that target to check
it, and compares its steps to congestion-aware with the main file's."""

from __future__ import annotations

import json

import pytest
from bench_module import load_benchmark  # tests/ is on sys.path

se = load_benchmark("sample_efficiency")

SETTINGS = {"preset": "aguascalientes-peak", "other": "monaco-peak", "steps": 30_000,
            "demo_scenarios": 2, "eval_seeds": [1000, 1001], "eq_iterations": 10,
            "expert": "offline"}
REFS = {side: {name: {"mean_travel_time": tt, "mean_return": ret, "arrival_rate": 1.0}
               for name, tt, ret in (("shortest-path", 190.0, 1.8),
                                     ("congestion-aware", 155.0, 2.4),
                                     ("equilibrium", 150.0, 2.43))}
        for side in ("heldout", "other")}


def record(algo: str, seed: int, steps: int, steps_to_ca: float | None) -> dict:
    return {"algo": algo, "seed": seed, "preset": SETTINGS["preset"], "steps": steps,
            "commit": "abc", "bound_version": se.BOUND_VERSION, "run_dir": f"runs/{algo}/{seed}",
            "wall_s": 1.0, "load_1min": 1.0, "auc": -3.0, "steps_to_ca": steps_to_ca,
            "heldout": {"mean_travel_time": 160.0, "mean_return": 2.3, "arrival_rate": 1.0},
            "other": {"mean_travel_time": 330.0, "mean_return": -0.5, "arrival_rate": 1.0},
            "curve": [[1000, -12.0], [steps, 2.0]]}


@pytest.fixture
def main_file(tmp_path):
    """A main table: reled reaches congestion-aware in 2 of 3 runs, ippo in none."""
    records = ([record("reled", s, 30_000, x) for s, x in enumerate((27_000, None, 29_000))]
               + [record("ippo", s, 30_000, None) for s in range(3)])
    table, goals = se.summarise(records, REFS)
    path = tmp_path / "se.json"
    path.write_text(json.dumps({**SETTINGS, "references": REFS, "references_commit": "c0",
                                "table": table, "goals": goals, "records": records}))
    return path


def ippo_at_90k(job) -> dict:
    algo, seed, args, target = job[:4]
    assert target == REFS["heldout"]["congestion-aware"]["mean_return"]  # the main file's
    return record(algo, seed, args.steps, (60_000, 84_000, None)[seed])


def test_supplement_takes_the_main_references_and_compares_steps(main_file, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "long.json"
    simulated = []

    def references(scenarios, net, eq_iterations, names=se.REFS):
        simulated.append(names)
        return {name: REFS["heldout"][name] for name in names}

    monkeypatch.setattr(se, "load_city", lambda name: None)
    monkeypatch.setattr(se, "references", references)
    monkeypatch.setattr(se, "train_one", ippo_at_90k)
    before = main_file.read_text()
    se.main(["--algos", "ippo", "--seeds", "0,1,2", "--steps", "90000",
             "--references-from", str(main_file), "--out", str(out)])
    assert simulated == [("congestion-aware",)]  # only the target is re-simulated
    assert main_file.read_text() == before
    res = json.loads(out.read_text())
    assert res["steps"] == 90_000 and res["references"] == REFS
    assert res["references_commit"] == "c0" and res["references_from"] == str(main_file)
    assert res["table"]["ippo"]["reached_ca"] == 2
    assert res["table"]["ippo"]["steps_to_ca"][0] == pytest.approx(72_000)
    assert res["beside"]["steps"] == 30_000
    assert res["beside"]["table"]["reled"]["reached_ca"] == 2
    # reled's 28,000 steps (main file) against ippo's 72,000 here: more than a third
    assert res["goals"]["reled_over_ippo_steps"] == pytest.approx(28_000 / 72_000)
    assert res["goals"]["ca_in_third_of_ippo_steps"] is False
    md = out.with_suffix(".md").read_text()
    assert "--steps 90000 --references-from" in md
    assert "| reled | 28000 [27000, 29000] | 2/3 |" in md and "| ippo | n/a | 0/3 |" in md


@pytest.mark.parametrize("problem, message", [
    ("same-out", "is also --out"),
    ("other-setting", "eval_seeds="),
    ("target-moved", "congestion-aware reference re-simulated now"),
])
def test_supplement_is_refused_before_training(main_file, tmp_path, monkeypatch, capsys,
                                               problem, message):
    out = main_file if problem == "same-out" else tmp_path / "long.json"
    ca = dict(REFS["heldout"]["congestion-aware"])
    if problem == "target-moved":
        ca["mean_return"] += 1e-9
    monkeypatch.setattr(se, "load_city", lambda name: None)
    monkeypatch.setattr(se, "references", lambda *a, **k: {"congestion-aware": ca})
    monkeypatch.setattr(se, "train_one", lambda job: pytest.fail("trained despite the refusal"))
    args = ["--algos", "ippo", "--seeds", "0", "--steps", "90000",
            "--references-from", str(main_file), "--out", str(out)]
    if problem == "other-setting":
        args += ["--eval-seeds", "1000"]
    before = main_file.read_text()
    with pytest.raises(SystemExit) as exc:
        se.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert main_file.read_text() == before
    assert problem == "same-out" or not out.exists()
