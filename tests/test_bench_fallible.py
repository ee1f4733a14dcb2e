"""benchmarks/sample_efficiency.py --expert: the expert is a setting of the records (its own
results file; older files were measured with the offline planner), and every demonstration
batch's verdict and injected errors are recorded."""

from __future__ import annotations

import json

import pytest
from bench_module import load_benchmark  # tests/ is on sys.path

se = load_benchmark("sample_efficiency")

SETTINGS = {"preset": "aguascalientes-peak", "other": "monaco-peak", "steps": 30_000,
            "demo_scenarios": 2, "eval_seeds": [1000, 1001], "eq_iterations": 10}


def test_each_expert_has_its_results_file():
    assert se.results_path("offline").name == "sample_efficiency.json"
    assert se.results_path("offline-fallible:0.8:freeflow").name == \
        "sample_efficiency_fallible.json"


def test_records_of_another_expert_are_refused():
    old = {**SETTINGS, "records": [{"algo": "ippo", "seed": 0}]}  # an older file: offline
    fallible = {**SETTINGS, "expert": "offline-fallible:0.5"}
    with pytest.raises(se.ResultsError, match="expert=offline, this run has expert=offline-"):
        se.kept_records(old, fallible, [("ippo", 1)])
    assert se.kept_records(old, {**SETTINGS, "expert": "offline"}, [("ippo", 1)])
    mixed = {**SETTINGS, "expert": "offline-fallible:0.5", "records": old["records"]}
    with pytest.raises(se.ResultsError, match="expert=offline-fallible:0.5"):
        se.kept_records(mixed, {**SETTINGS, "expert": "offline-fallible:0.3"}, [("ippo", 1)])


def test_an_unknown_expert_is_one_line_and_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        se.main(["--expert", "offline-fallible:x", "--out", str(tmp_path / "r.json")])
    assert exc.value.code == 2
    assert "not a number" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_every_batch_is_recorded_with_its_injected_errors(tmp_path):
    rows = [(0, True, 1, 1, False, [{"round": 1, "agents": 6, "kind": "freeflow"}] * 3, 18),
            (1, True, 2, 2, False, None, 12),
            (2, False, 1, None, False, [], 0)]
    for seed, accepted, rounds, acc_round, fallback, injected, herd in rows:
        d = tmp_path / "demos" / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "b.json").write_text(json.dumps({
            "accepted": accepted, "rounds": rounds, "scenario": {"seed": seed},
            "extra": {"accepted_round": acc_round, "fallback": fallback, "variant": 0,
                      "injected": injected, "herding_agents": herd}}))
    got = se.demo_batches(tmp_path)
    assert [(b["scenario_seed"], b["accepted"], b["rounds"], b["accepted_round"],
             b["herding_agents"]) for b in got] == [(0, True, 1, 1, 18), (1, True, 2, 2, 12),
                                                    (2, False, 1, None, 0)]
    assert se.injected_text(got[0]["injected"]) == "r1: 3 groups, 18 agents, freeflow"
    assert se.injected_text(got[1]["injected"]) == "cached"
    assert se.injected_text(got[2]["injected"]) == "none"
