"""benchmarks/train_throughput.py: the GPU goal and merging one GPU machine's cuda and cpu
reports into one results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_module import load_benchmark  # tests/ is on sys.path

tt = load_benchmark("train_throughput")


def row(device: str, n: int, steps_per_s: int, sgd: float) -> dict:
    return {"kind": "scale", "device": device, "agents": n, "vehicles": n, "city": "c",
            "departure_window_s": 600.0, "n_envs": 1, "vector": "dummy", "engine": "fast",
            "env_steps": 10, "decisions": 100, "wall_s": 1.0,
            "agent_steps_per_s": steps_per_s, "decisions_per_s": 100, "sgd_steps_per_s": sgd,
            "share_env": 0.9, "share_policy": 0.05, "share_update": 0.05, "peak_rss_gib": 1.5,
            "load_before": [1.0], "load_after": [1.0], "code": {"commit": "abc", "modified": []}}


def report(tmp_path: Path, name: str, device: str, rows: list[dict],
           platform: str = "host-a") -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"device": device, "cpu_count": 16, "platform": platform,
                                "load_start": [0.5], "command": f"run {name}", "rows": rows}))
    return path


@pytest.mark.parametrize(("gpu_rate", "met"), [(5_000_000, True), (4_999_999, False)])
def test_gpu_goal_is_five_times_the_cpu_rate_at_100k(gpu_rate, met):
    rows = [row("cuda:0", 100_000, gpu_rate, 80.0), row("cpu", 100_000, 1_000_000, 16.0)]
    assert tt.goals(rows)["gpu_100k_ge_5x_cpu"] is met
    assert "gpu_100k_ge_5x_cpu" not in tt.goals(rows[1:])  # no GPU row: no GPU claim


def test_merge_writes_one_report_with_same_host_ratios(tmp_path):
    a = report(tmp_path, "cuda", "cuda", [row("cuda", 100_000, 2_700_000, 83.0)])
    b = report(tmp_path, "cpu", "cpu", [row("cpu", 100_000, 2_500_000, 16.0)])
    out = tt.merge([a, b], tmp_path / "out")
    assert [r["device"] for r in out["rows"]] == ["cuda", "cpu"]
    assert out["sources"] == ["run cuda", "run cpu"]
    assert out["goals"]["gpu_100k_ge_5x_cpu"] is False
    md = (tmp_path / "out" / "train_throughput_scale_gpu.md").read_text()
    assert "agent-steps/s cuda / cpu = 1.08x; update (SGD steps/s) 5.2x" in md
    assert json.loads((tmp_path / "out" / "train_throughput_scale_gpu.json").read_text()) == out


def test_merge_refuses_reports_of_different_hosts(tmp_path):
    a = report(tmp_path, "cuda", "cuda", [row("cuda", 100_000, 2_700_000, 83.0)], "host-a")
    b = report(tmp_path, "cpu", "cpu", [row("cpu", 100_000, 2_500_000, 16.0)], "host-b")
    with pytest.raises(SystemExit, match="one host"):
        tt.merge([a, b], tmp_path / "out")
