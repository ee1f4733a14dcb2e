"""``--vector ray`` for real: a local Ray instance (loopback, 2 CPUs) started and stopped here;
the run equals ``--vector subproc`` for the same seed."""

import json

import pytest
from typer.testing import CliRunner

from relied.cli import app

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=80 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def train(tmp_path, vector: str) -> tuple[dict, str]:
    cfg = tmp_path / f"{vector}.json"
    cfg.write_text(json.dumps({"horizon_s": 300}))
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--city", "west-oakland",
                                   "--agents", "6", "--algo", "ippo", "--steps", "900",
                                   "--envs", "2", "--vector", vector, "--share", "all",
                                   "--runs-dir", str(tmp_path / vector), "--no-progress",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    from pathlib import Path

    run_dir = Path(out["run_dir"])
    run_dir = run_dir if run_dir.is_absolute() else Path.cwd() / run_dir
    return out, (run_dir / "metrics.csv").read_text()


def test_ray_vector_env_equals_subproc(tmp_path, local_ray):
    assert ray.is_initialized() and len(ray.nodes()) == 1
    on_ray, ray_rows = train(tmp_path, "ray")
    on_subproc, subproc_rows = train(tmp_path, "subproc")
    assert on_ray["iterations"] >= 2
    for key in ("env_steps", "decisions", "final_return", "mean_travel_time", "arrival_rate"):
        assert on_ray[key] == on_subproc[key], key
    assert _same_but_wall(ray_rows, subproc_rows)


def _same_but_wall(a: str, b: str) -> bool:
    import csv
    import io

    ra, rb = list(csv.DictReader(io.StringIO(a))), list(csv.DictReader(io.StringIO(b)))
    return len(ra) == len(rb) and all(
        {k: v for k, v in x.items() if k != "wall_s"} == {k: v for k, v in y.items()
                                                           if k != "wall_s"}
        for x, y in zip(ra, rb, strict=True))
