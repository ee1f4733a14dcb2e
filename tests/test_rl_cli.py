"""The train, eval and compare verbs on a tiny run."""

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from relied.cli import app

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["--city", "west-oakland", "--agents", "5", "--experts", "shortest-path", "--envs", "1",
        "--no-progress", "--json"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo, steps in (("reled", "800"), ("ippo", "800")):
        res = runner.invoke(app, ["train", "--algo", algo, "--steps", steps, "--runs-dir",
                                  str(root), *TINY])
        assert res.exit_code == 0, res.output
        out[algo] = json.loads(res.stdout.strip().splitlines()[-1])
    return root, out


def test_train_prints_summary_json(runs):
    _, out = runs
    summary = out["reled"]
    for key in ("run_dir", "env_steps", "final_return", "mean_travel_time", "arrival_rate"):
        assert key in summary
    assert summary["env_steps"] >= 800 and summary["algo"] == "reled"
    assert "/west-oakland/reled/0/" in summary["run_dir"]


def test_eval_on_held_out_seeds_and_another_city(runs):
    _, out = runs
    res = runner.invoke(app, ["eval", out["reled"]["run_dir"], "--seeds", "7,8", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["seeds"] == [7, 8]
    assert set(result["policies"]) == {"reled", "shortest-path", "congestion-aware",
                                       "equilibrium"}
    eq = result["policies"]["equilibrium"]
    assert 0 <= eq["relative_gap"] < 1 and "vs_equilibrium" in result["policies"]["reled"]
    sp = result["policies"]["shortest-path"]
    assert sp["arrival_rate"] == 1.0 and sp["mean_travel_time"] > 0
    seed_folder = str(Path(out["reled"]["run_dir"]).parent)  # its newest run is used
    res = runner.invoke(app, ["eval", seed_folder, "--city", "monaco", "--agents", "8", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["run_dir"] == out["reled"]["run_dir"]
    assert result["city"] == "monaco" and result["agents"] == 8
    assert 0.0 <= result["policies"]["reled"]["arrival_rate"] <= 1.0


def test_compare_draws_curves_and_reports_sample_efficiency(runs, tmp_path):
    root, out = runs
    png = tmp_path / "cmp.png"
    res = runner.invoke(app, ["compare", str(root), "--out", str(png), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert png.stat().st_size > 1000
    algos = {row["algo"]: row for row in result["algos"]}
    assert set(algos) == {"reled", "ippo"}
    assert result["ippo_final_return"] == pytest.approx(algos["ippo"]["final_return"])
    for row in algos.values():
        steps = row["steps_to_ippo_final"]
        assert steps is None or 0 < steps <= row["env_steps"]
        assert 0 <= row["reached_ippo_final"] <= row["runs"] == 1
    assert algos["ippo"]["reached_ippo_final"] == 1  # a single run reaches its own final


def test_steps_to_reach_and_mean_curve_on_hand_made_rows():
    from relied.rl.evaluate import mean_curve, steps_to_reach

    rows = [{"env_steps": s, "return": r} for s, r in ((100, 0.0), (200, 3.0), (300, 3.0),
                                                        (400, 6.0))]
    assert steps_to_reach(rows, 2.0) == 300  # running mean of 3: 0, 1.5, 2, 4
    assert steps_to_reach(rows, 4.0) == 400
    assert steps_to_reach(rows, 4.1) is None
    other = [{"env_steps": s, "return": 1.0} for s in (200, 400)]
    curve = mean_curve([rows, other], points=3)  # only where both runs have logged points
    assert [c["env_steps"] for c in curve] == [200, 300, 400]
    assert [c["return"] for c in curve] == pytest.approx([2.0, 2.0, 3.5])


def test_resume_verb_continues_a_finished_run(runs):
    _, out = runs
    res = runner.invoke(app, ["train", "--resume", out["ippo"]["run_dir"], "--no-progress",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["env_steps"] == out["ippo"]["env_steps"]


def test_bad_input_gives_one_line_errors(tmp_path, monkeypatch):
    res = runner.invoke(app, ["eval", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "not a run folder" in res.stderr
    res = runner.invoke(app, ["train", "--algo", "dqn", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "invalid TrainConfig: --algo (algo): \"dqn\"" in res.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = runner.invoke(app, ["train", "--vector", "ray", "--runs-dir", str(tmp_path), *TINY])
    assert res.exit_code == 2 and "pip install 'relied[ray]'" in res.stderr
    assert not any(tmp_path.rglob("config.json"))


def test_train_from_a_config_file_with_overrides(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"city": "west-oakland", "n_agents": 3, "algo": "mappo",
                               "hidden": 16, "total_steps": 5000}))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--steps", "10", "--runs-dir",
                              str(tmp_path), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["algo"], saved["hidden"], saved["total_steps"]) == ("mappo", 16, 10)
