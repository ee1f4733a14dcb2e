"""``--bound-version`` (6, the measured lookahead, the default; 5, the analytic bound) reaches
the critic: a batch of ``relied experts generate`` is judged and stored as its version and
re-checked as such, and ``relied train`` hands the version to its expert team."""

import json

import pytest
from typer.testing import CliRunner

from relied.cli import app
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.experts.critic import recheck_batch
from relied.experts.demos import list_batches, load_batch
from relied.rl.config import TrainConfig
from relied.rl.demos import team_config
from relied.rl.trial import fresh_learners

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _generate(tmp_path, *flags):
    out = tmp_path / ("demos" + "".join(flags))
    res = runner.invoke(app, ["experts", "generate", "--city", "west-oakland", "--agents", "6",
                              "--out", str(out), "--no-cache", "--no-progress", "--json",
                              *flags])
    assert res.exit_code in (0, 1), res.output  # 1: no plan accepted (fallback saved)
    [batch] = list_batches(out)
    return json.loads(res.stdout), batch


def test_generate_judges_and_stores_the_lookahead(tmp_path):
    report, batch = _generate(tmp_path)  # the default
    _, meta = load_batch(batch)
    assert report["bound_version"] == 6 and meta.extra["bound"]["version"] == 6
    assert "forecast" in meta.verdict["reason"]  # the lookahead judged it
    core = RoutingCore(load_city(meta.scenario.city), meta.scenario)
    learners = fresh_learners(TrainConfig(city=meta.scenario.city, n_agents=6, seed=0), core)
    again = recheck_batch(batch, learners)  # the stored settings: the lookahead again
    assert again.lookahead_drift_s is not None and again.bound_accepted is not None
    alone = recheck_batch(batch)  # no learners to look ahead with: version 4's stand-in
    assert not alone.lookahead and alone.lookahead_drift_s is None
    report5, batch5 = _generate(tmp_path, "--bound-version", "5")  # the analytic bound
    _, meta5 = load_batch(batch5)
    assert report5["bound_version"] == 5 and meta5.extra["bound"]["version"] == 5
    assert "forecast" not in meta5.verdict["reason"]
    assert recheck_batch(batch5, learners).lookahead_drift_s is None


def test_train_passes_the_bound_version_to_the_team(train_config_of):
    for flags, expected in ((["--bound-version", "5"], 5), ([], 6)):
        cfg = train_config_of(*flags)
        assert cfg.bound_version == expected and team_config(cfg).bound.version == expected
    res = train_config_of("--bound-version", "7")  # refused before a config is built
    assert res.exit_code == 2 and "--bound-version" in res.output


def test_a_run_saved_before_bound_version_was_stored_loads_as_version_5(tmp_path):
    """Runs written before the default became 6 ran the analytic bound: their config.json,
    which has no bound_version, must not silently load as the new default."""
    path = tmp_path / "config.json"
    TrainConfig(city="west-oakland", n_agents=4).save(path)
    assert TrainConfig.load(path).bound_version == 6
    stored = json.loads(path.read_text())
    del stored["bound_version"]
    path.write_text(json.dumps(stored))
    assert TrainConfig.load(path).bound_version == 5
