"""One demonstration batch reuses the whole-fleet simulations the team already ran: the
shortest-path baseline of its setup and the critic's execution of the returned plan (the team
keeps only that one execution, not one per round)."""

import asyncio

import numpy as np
import pytest

import relied.agents.generate as generate
from relied.agents.clients import make_client
from relied.agents.team import ExpertTeam, TeamConfig
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.demos import load_batch

SC = Scenario(city="aguascalientes", n_agents=24, seed=3, min_trip_m=200)
CONFIG = TeamConfig(demo_agents=8, group_size=4, bound=BoundConfig(epsilon=2.0))


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def executions(monkeypatch):
    """Whole-fleet executions the batch itself starts (True: of a plan's routes)."""
    calls: list[bool] = []
    real = generate.execute
    monkeypatch.setattr(generate, "execute", lambda *a, **kw: calls.append(
        kw.get("routes") is not None) or real(*a, **kw))
    return calls, real


def test_a_batch_reuses_the_baseline_and_the_critics_execution(tmp_path, executions):
    calls, execute = executions
    [path] = generate.generate_demonstrations(SC, tmp_path / "demos", config=CONFIG)
    assert calls == []  # nothing simulated again
    traj, meta = load_batch(path)
    net = load_city(SC.city)
    fresh = execute(net, meta.scenario, routes=[index_of(net, r).tolist() for r in meta.routes])
    for field in ("obs", "action", "mask", "reward", "done"):
        assert np.array_equal(getattr(traj, field), getattr(fresh.traj, field)), field
    assert meta.metrics["mean_travel_time"] == fresh.metrics["mean_travel_time"]
    assert (meta.metrics["shortest_path_mean_travel_time"]
            == execute(net, meta.scenario).metrics["mean_travel_time"])
    # an answer from the cache ran no check: its plan is executed once
    calls.clear()
    [again] = generate.generate_demonstrations(SC, tmp_path / "again", config=CONFIG)
    assert calls == [True] and load_batch(again)[1].extra["cached"] is True


def test_the_team_keeps_only_the_execution_it_returns():
    """No round passes (tiny epsilon): the fallback's execution is the one kept."""
    net = load_city(SC.city)
    core = RoutingCore(net, SC)
    view = CityView(net)
    config = TeamConfig(demo_agents=8, group_size=4, max_rounds=3,
                        bound=BoundConfig(epsilon=1e-6))
    team = ExpertTeam(core, view, make_client("offline", net, view, seed=SC.seed), config)
    out = asyncio.run(team.run())
    assert out.fallback and len(team.runs) == 3
    kept = [r for r, (_, run, _) in team.runs.items() if run is not None]
    assert kept == [out.verdict.round]
    assert team.execution(out) is team.runs[out.verdict.round][1]
    assert team.runs[out.verdict.round][0] == [index_of(net, r).tolist() for r in out.routes]
