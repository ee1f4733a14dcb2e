"""benchmarks/sample_efficiency.py: per-run records, merging a partial re-run, and refusing
stale bound versions of algorithms that train on critic-filtered demos."""

from __future__ import annotations

import json

import pytest
from bench_module import load_benchmark  # tests/ is on sys.path

se = load_benchmark("sample_efficiency")

SETTINGS = {"preset": "aguascalientes-peak", "other": "monaco-peak", "steps": 30_000,
            "demo_scenarios": 2, "eval_seeds": [1000, 1001], "eq_iterations": 10}
REFS = {side: {name: {"mean_travel_time": tt, "mean_return": ret, "arrival_rate": 1.0}
               for name, tt, ret in (("shortest-path", 190.0, 1.8),
                                     ("congestion-aware", 155.0, 2.4),
                                     ("equilibrium", 150.0, 2.43))}
        for side in ("heldout", "other")}


def record(algo: str, seed: int, bound_version: int = se.BOUND_VERSION, auc: float = -3.0,
           tt: float = 160.0) -> dict:
    return {"algo": algo, "seed": seed, "preset": SETTINGS["preset"], "steps": 30_000,
            "commit": "abc", "bound_version": bound_version, "run_dir": f"runs/{algo}/{seed}",
            "wall_s": 1.0, "load_1min": 1.0, "auc": auc, "steps_to_ca": None,
            "heldout": {"mean_travel_time": tt, "mean_return": 2.3, "arrival_rate": 1.0},
            "other": {"mean_travel_time": 330.0, "mean_return": -0.5, "arrival_rate": 1.0},
            "curve": [[1000, -12.0], [30000, 2.0]]}


def stored(records: list[dict]) -> dict:
    return {**SETTINGS, "references": REFS, "records": records}


def test_filter_dependence_follows_the_algo_table():
    assert {a for a in se.ALGOS.split(",") if se.bound_dependent(a)} == {"reled", "reled-fixed",
                                                                        "bc"}


def test_stale_bound_of_a_filtered_algorithm_is_refused():
    old = stored([record("reled", s, bound_version=3) for s in range(3)]
                 + [record("ippo", s, bound_version=3) for s in range(3)])
    with pytest.raises(se.ResultsError, match=r"reled seeds 1,2.*--algos reled"):
        se.kept_records(old, SETTINGS, [("reled", 0), ("ippo", 0)], bound_version=4)
    with pytest.raises(se.ResultsError, match="bound version"):
        se.merge(old["records"], [record("ippo", 0, bound_version=4)], bound_version=4)


def test_bound_independent_records_are_kept_when_the_filtered_ones_are_rerun():
    old = stored([record("reled", s, bound_version=3) for s in range(2)]
                 + [record("leed", s, bound_version=3) for s in range(2)])
    kept = se.kept_records(old, SETTINGS, [("reled", 0), ("reled", 1)], bound_version=4)
    assert [(r["algo"], r["seed"], r["bound_version"]) for r in kept] == [("leed", 0, 3),
                                                                          ("leed", 1, 3)]
    merged = se.merge(kept, [record("reled", s, bound_version=4) for s in range(2)],
                      bound_version=4)
    assert [(r["algo"], r["bound_version"]) for r in merged] == [("reled", 4)] * 2 + \
        [("leed", 3)] * 2


def test_partial_rerun_replaces_its_records_and_the_table_uses_all():
    old = [record("ippo", s, auc=-10.0 - s) for s in range(3)]
    new = [record("ippo", 1, auc=-5.0)]
    merged = se.merge(se.kept_records(stored(old), SETTINGS, [("ippo", 1)]), new)
    assert [(r["seed"], r["auc"]) for r in merged] == [(0, -10.0), (1, -5.0), (2, -12.0)]
    table, _ = se.summarise(merged, REFS)
    assert table["ippo"]["seeds"] == [0, 1, 2]
    assert table["ippo"]["auc"][0] == pytest.approx(-9.0)


def test_records_of_other_settings_are_refused():
    old = stored([record("ippo", 0)]) | {"steps": 20_000}
    with pytest.raises(se.ResultsError, match="steps=20000"):
        se.kept_records(old, SETTINGS, [("ippo", 1)])
    assert se.kept_records(old, SETTINGS, [("ippo", 0)]) == []  # all replaced: a full re-run


def test_results_without_per_run_records_need_a_full_run(tmp_path):
    path = tmp_path / "se.json"
    path.write_text(json.dumps({**SETTINGS, "runs": {"ippo": [{"seed": 0}]}}))
    with pytest.raises(se.ResultsError, match="no per-run records"):
        se.load_stored(path)


def test_same_figures_is_exact():
    a = record("leed", 0)
    b = json.loads(json.dumps(a)) | {"run_dir": "elsewhere", "wall_s": 99.0}
    assert se.same_figures(a, b) == []
    b["curve"] = [[1000, -12.0], [30000, 2.0000000001]]
    assert se.same_figures(a, b) == ["curve"]


def test_cli_refuses_stale_records_before_training(tmp_path, monkeypatch, capsys):
    path = tmp_path / "se.json"
    path.write_text(json.dumps(stored([record("bc", 0, bound_version=se.BOUND_VERSION - 1),
                                       record("ippo", 0)])))
    before = path.read_text()
    monkeypatch.setattr(se, "train_one", lambda job: pytest.fail("trained despite stale records"))
    with pytest.raises(SystemExit) as exc:
        se.main(["--algos", "ippo", "--seeds", "1", "--out", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bc seeds 0" in err and "--algos bc" in err
    assert path.read_text() == before


def test_cli_merges_a_part_and_recomputes_the_summary(tmp_path, monkeypatch):
    path = tmp_path / "se.json"
    path.write_text(json.dumps(stored([record("reled", s, auc=-4.0) for s in range(2)]
                                      + [record("ippo", s, auc=-10.0) for s in range(2)])))
    monkeypatch.setattr(se, "load_city", lambda name: None)
    monkeypatch.setattr(se, "train_one", lambda job: record(job[0], job[1], auc=-2.0))
    se.main(["--algos", "reled", "--seeds", "1", "--out", str(path)])
    out = json.loads(path.read_text())
    assert [(r["algo"], r["seed"], r["auc"]) for r in out["records"]] == [
        ("reled", 0, -4.0), ("reled", 1, -2.0), ("ippo", 0, -10.0), ("ippo", 1, -10.0)]
    assert out["table"]["reled"]["auc"][0] == pytest.approx(-3.0)
    assert out["references"] == REFS
    assert "| reled | 0,1 |" in path.with_suffix(".md").read_text()


def test_demo_verdicts_count_the_critics_judgements(tmp_path):
    assert se.demo_verdicts(tmp_path) is None
    for i, (accepted, extra) in enumerate([(True, {"accepted_round": 1}),
                                           (True, {"accepted_round": 2}),
                                           (False, {"fallback": True})]):
        d = tmp_path / "demos" / f"seed-{i}"
        d.mkdir(parents=True)
        (d / "b.json").write_text(json.dumps({"accepted": accepted, "extra": extra}))
    assert se.demo_verdicts(tmp_path) == {"batches": 3, "accepted": 2, "first_round": 1,
                                          "fallback": 1}


def test_cli_merges_records_of_a_part_run_into_its_own_file(tmp_path, monkeypatch, capsys):
    """A bound-independent part run while the main file holds stale records goes to its own
    --out; --merge takes its records into the main file once it is current, training
    nothing; another setting or other references are refused."""
    main, part = tmp_path / "se.json", tmp_path / "part.json"
    main.write_text(json.dumps(stored([record("reled", 0, auc=-4.0),
                                       record("reled-nofilter", 0, auc=-9.0)])))
    part.write_text(json.dumps(stored([record("reled-nofilter", 0, auc=-2.5),
                                       record("ippo", 0, auc=-10.0)])))
    monkeypatch.setattr(se, "load_city", lambda name: None)
    monkeypatch.setattr(se, "train_one", lambda job: pytest.fail("trained despite --merge"))
    se.main(["--algos", "reled-nofilter", "--seeds", "0", "--merge", str(part),
             "--out", str(main)])
    out = json.loads(main.read_text())
    assert [(r["algo"], r["auc"]) for r in out["records"]] == [("reled", -4.0),
                                                               ("reled-nofilter", -2.5)]
    assert out["last_run"]["merged_from"] == str(part)
    other = json.loads(part.read_text())
    for change in ({"steps": 10_000}, {"references": {**REFS, "other": {}}}):
        part.write_text(json.dumps({**other, **change}))
        with pytest.raises(SystemExit) as exc:
            se.main(["--algos", "reled-nofilter", "--seeds", "0", "--merge", str(part),
                     "--out", str(main)])
        assert exc.value.code == 2 and "--merge" not in capsys.readouterr().out
    part.write_text(json.dumps(other))
    with pytest.raises(SystemExit):
        se.main(["--algos", "ippo", "--seeds", "1", "--merge", str(part), "--out", str(main)])
    assert "no record of ippo seed 1" in capsys.readouterr().err
