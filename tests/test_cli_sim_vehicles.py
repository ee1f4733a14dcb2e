"""``--sim-vehicles`` reaches the expert team: from ``relied experts generate`` into the
batch's fleet sample, from ``relied train`` through TrainConfig into the team's settings."""

import pytest
from typer.testing import CliRunner

from relied.cli import app
from relied.env.scenario import Scenario
from relied.experts.demos import list_batches, load_batch
from relied.rl.config import TrainConfig
from relied.rl.demos import team_config

runner = CliRunner()
# 40 learners among 200 vehicles (tests/test_expert_scale_sample.py's case)
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _generate(tmp_path, sim: int):
    path = tmp_path / "scenario.json"
    path.write_text(SC.model_dump_json())
    out = tmp_path / f"demos{sim}"
    res = runner.invoke(app, ["experts", "generate", "--scenario", str(path), "--demo-agents",
                              "8", "--group-size", "4", "--epsilon", "2", "--sim-vehicles",
                              str(sim), "--out", str(out), "--no-cache", "--no-progress",
                              "--json"])
    assert res.exit_code in (0, 1), res.output  # 1: no plan accepted (fallback saved)
    [batch] = list_batches(out)
    return load_batch(batch)[1]


def test_generate_simulates_a_fleet_sample_of_the_given_size(tmp_path):
    meta = _generate(tmp_path, 80)
    sample = meta.fleet_sample
    assert sample is not None and sample.target_vehicles == 80
    assert len(sample.learners) + len(sample.background) == pytest.approx(80, abs=2)
    assert sample.factor == pytest.approx(80 / SC.n_vehicles, abs=0.02)
    assert set(meta.demo_agents) <= set(sample.learners)
    assert _generate(tmp_path, 0).fleet_sample is None  # 0: the whole fleet


def test_train_passes_sim_vehicles_to_the_team(train_config_of):
    for flags, expected in ((["--sim-vehicles", "120"], 120), (["--sim-vehicles", "0"], None),
                            ([], TrainConfig().sim_vehicles)):
        cfg = train_config_of(*flags)
        assert cfg.sim_vehicles == expected and team_config(cfg).sim_vehicles == expected
    cfg = TrainConfig(sim_vehicles=120, epsilon=1.5, demo_agents=7)
    team = team_config(cfg)
    assert (team.bound.epsilon, team.bound.gamma, team.demo_agents) == (1.5, cfg.gamma, 7)
