"""Every user error of train/eval/compare: one line naming the flag or file, exit 2, strict
JSON (issue 10, items 8-12)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from relied.cli import app
from relied.rl.config import TrainConfig

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["--city", "west-oakland", "--agents", "3", "--envs", "1", "--no-progress"]


def one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo, city in (("ippo", "west-oakland"), ("reled", "west-oakland"), ("ippo", "monaco")):
        res = runner.invoke(app, ["train", "--algo", algo, "--steps", "300", "--runs-dir",
                                  str(root / city), "--experts", "shortest-path", *TINY,
                                  "--city", city, "--json"] if algo == "reled" else
                            ["train", "--algo", algo, "--steps", "300", "--runs-dir",
                             str(root / city), *TINY, "--city", city, "--json"])
        assert res.exit_code == 0, res.output
        out[(algo, city)] = Path(json.loads(res.stdout)["run_dir"])
    return root, out


@pytest.mark.parametrize("args, needles", [
    (["--experts", "gpt4"], ["--experts (experts): \"gpt4\"", "'ollama:<model>'"]),
    (["--epsilon", "-1"], ["--epsilon (epsilon): -1.0", "greater than 0"]),
    (["--epsilon", "inf"], ["--epsilon (epsilon): Infinity", "finite"]),
    (["--timeout", "0"], ["--timeout (timeout_s): 0.0"]),
    (["--seed", "-5"], ["--seed (seed): -5", "greater than or equal to 0"]),
    (["--agents", "200000"], ["--agents (n_agents): 200000", "less than or equal to 100000"]),
    (["--lr", "nan"], ["--lr (lr): NaN"]),
    (["--algo", "ippo", "--demos", "somewhere"], ["demos_dir is only used by bc, leed, reled"]),
    (["--city", "nowhere/x.osm"], ["city file", "does not exist"]),
])
def test_bad_train_flags(tmp_path, args, needles):
    res = runner.invoke(app, ["train", *TINY, "--runs-dir", str(tmp_path / "runs"), *args])
    one_line_error(res, *needles)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_ollama_down_names_the_host_flag_and_leaves_nothing(tmp_path):
    res = runner.invoke(app, ["train", *TINY, "--runs-dir", str(tmp_path), "--experts",
                              "ollama:qwen2.5", "--ollama-host", "127.0.0.1:9", "--json"])
    line = one_line_error(res, "Ollama is not reachable at http://127.0.0.1:9",
                          "--ollama-host", "--experts offline")
    assert json.loads(res.stdout) == {"error": line.removeprefix("error: ")}
    assert list(tmp_path.iterdir()) == []


def test_ollama_host_flag_reaches_the_server(tmp_path):
    from ollama_stub import OllamaStub

    with OllamaStub([lambda body: "{}"], models=("other:latest",)) as stub:
        res = runner.invoke(app, ["train", *TINY, "--runs-dir", str(tmp_path), "--experts",
                                  "ollama:missing", "--ollama-host", stub.host])
    one_line_error(res, "model 'missing' is not pulled", "other:latest")


def test_epsilon_and_timeout_reach_the_expert_team(tmp_path):
    res = runner.invoke(app, ["train", *TINY, "--runs-dir", str(tmp_path), "--experts",
                              "offline", "--epsilon", "54321", "--timeout", "7", "--steps", "10",
                              "--json"])
    assert res.exit_code == 0, res.output
    run = Path(json.loads(res.stdout)["run_dir"])
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["epsilon"], cfg["timeout_s"], cfg["experts"]) == (54321.0, 7.0, "offline")
    metas = list((run / "demos").rglob("*.json"))  # one batch per demonstrated scenario
    assert len(metas) == TrainConfig().demo_scenarios
    for meta in metas:
        assert json.loads(meta.read_text())["extra"]["bound"]["epsilon"] == 54321.0


def test_malformed_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"n_agents": 3,,}')
    one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), str(cfg),
                   "not valid JSON at line 1")
    cfg.write_text('{"horizon_s": 100, "departure_window_s": 300, "bogus": 1}')
    line = one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]))
    assert "bogus: 1 (unknown field)" in line
    cfg.write_text('{"horizon_s": 100, "departure_window_s": 300}')
    one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]),
                   "departure_window_s (300) must be shorter than horizon_s (100)")
    cfg.write_text("[1, 2]")
    one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "JSON object")


def test_eval_seeds_must_be_integers(runs):
    _, out = runs
    run = str(out[("ippo", "west-oakland")])
    one_line_error(runner.invoke(app, ["eval", run, "--seeds", "a,b"]),
                   "--seeds: 'a' is not an integer")
    one_line_error(runner.invoke(app, ["eval", run, "--seeds", "1,-3"]), "--seeds: -3")
    res = runner.invoke(app, ["eval", run, "--seeds", "x", "--json"])
    assert json.loads(res.stdout)["error"].startswith("--seeds")


def test_eval_json_is_strict(runs):
    _, out = runs
    res = runner.invoke(app, ["eval", str(out[("ippo", "west-oakland")]), "--seeds", "4",
                              "--json"])
    assert res.exit_code == 0, res.output
    json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_corrupt_metrics_csv_blocks_resume_with_the_file_named(runs, tmp_path):
    _, out = runs
    run = tmp_path / "run"
    shutil.copytree(out[("ippo", "west-oakland")], run)
    csv = run / "metrics.csv"
    csv.write_text(csv.read_text().replace("\n", "\nnot,numbers\n", 1))
    one_line_error(runner.invoke(app, ["train", "--resume", str(run)]), str(csv), "line 2")


def test_compare_refuses_to_mix_cities(runs, tmp_path):
    root, out = runs
    res = runner.invoke(app, ["compare", str(root), "--out", str(tmp_path / "c.png")])
    one_line_error(res, "different city", "monaco (1 runs)", "west-oakland (2 runs)")
    assert not (tmp_path / "c.png").exists()


def test_compare_marks_unfinished_runs_and_writes_where_it_says(runs, tmp_path):
    root, out = runs
    city = tmp_path / "city"
    shutil.copytree(root / "west-oakland", city)
    (unfinished,) = [p.parent for p in city.rglob("policy.pt") if "/reled/" in str(p)]
    (unfinished / "policy.pt").unlink()
    (unfinished / "summary.json").unlink()
    figures = tmp_path / "figs"
    figures.mkdir()
    res = runner.invoke(app, ["compare", str(city), "--out", str(figures), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["plot"] == str(figures / "compare.png") and Path(result["plot"]).is_file()
    assert [row["algo"] for row in result["algos"]] == ["ippo"]
    assert [u["run_dir"] for u in result["unfinished"]] == [str(unfinished)]
    res = runner.invoke(app, ["compare", str(city), "--out", str(figures / "all.svg"),
                              "--include-unfinished", "--json"])
    result = json.loads(res.stdout)
    rows = {row["algo"]: row for row in result["algos"]}
    assert rows["reled"]["unfinished"] == 1 and rows["ippo"]["unfinished"] == 0
    assert (figures / "all.svg").is_file()
    res = runner.invoke(app, ["compare", str(city), "--out", str(tmp_path / "x.foo")])
    one_line_error(res, "--out", "unknown figure format '.foo'")
    res = runner.invoke(app, ["compare", str(unfinished), "--out", str(figures / "r.png")])
    one_line_error(res, "none of the given runs has finished", "--include-unfinished")


def test_compare_curve_is_interpolated_within_logged_points(tmp_path):
    from relied.rl.evaluate import mean_curve, steps_to_reach

    late = [{"env_steps": s, "return": r} for s, r in ((720, 1.0), (1440, 2.0), (2160, 3.0))]
    early = [{"env_steps": s, "return": 5.0} for s in (12, 600, 2160)]
    curve = mean_curve([late, early], points=4)
    assert curve[0]["env_steps"] == 720  # no point before the later run's first one
    assert steps_to_reach(curve, 3.0, 1) == 720


def test_json_error_is_printed_on_stdout(tmp_path):
    res = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--json"])
    line = one_line_error(res, "does not exist")
    assert json.loads(res.stdout) == {"error": line.removeprefix("error: ")}
