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
from relied.env.rollout import DecisionRecord
from relied.env.scenario import Scenario, index_of
from relied.experts import critic
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
    rows, meta = load_batch(path)
    net = load_city(SC.city)
    fresh = execute(net, meta.scenario, routes=[index_of(net, r).tolist() for r in meta.routes])
    for field in (*DecisionRecord.ROWS, "returns", "steps"):  # the plan's decision rows
        assert np.array_equal(getattr(rows, field), getattr(fresh.decisions, field)), field
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


@pytest.mark.parametrize("demo_agents", [8, None])
def test_the_setup_simulates_the_shortest_paths_once(monkeypatch, demo_agents):
    """The team's shortest-path baseline also gives the routes the learners outside the sample
    drive and, as it replays exactly, is the reference's execution: the setup executes one
    joint plan and drives no shortest-path episode of its own (the congestion-aware
    alternative routes are still driven)."""
    monkeypatch.setattr(critic, "_CACHE", {})
    executed, driven = [], []
    real_execute, real_drive = critic.execute, critic.drive
    monkeypatch.setattr(critic, "execute", lambda *a, **kw: executed.append(kw.get("routes"))
                        or real_execute(*a, **kw))

    def drive(core, policy):  # policy episodes (a resimulation drives routes)
        if type(policy).__name__ != "RoutePolicy":
            driven.append(type(policy).__name__)
        return real_drive(core, policy)

    monkeypatch.setattr(critic, "drive", drive)
    net = load_city(SC.city)
    view = CityView(net)
    config = CONFIG.model_copy(update={"demo_agents": demo_agents})
    team = ExpertTeam(RoutingCore(net, SC), view, make_client("offline", net, view), config)
    assert executed == [None] and driven == ["CongestionAwarePolicy"]
    sp = critic.policy_routes(net, SC, "shortest-path")
    assert driven == ["CongestionAwarePolicy"]  # answered by the baseline's routes
    if demo_agents:
        assert team.fixed_routes == sp
    fresh = real_execute(net, team.core.scenario, routes=sp)  # what the reference ran before
    again = critic.shortest_path_run(net, SC)
    assert again.exact_replay and again.driven == sp
    np.testing.assert_array_equal(fresh.returns, again.returns)
    np.testing.assert_array_equal(fresh.edges_by_step, again.edges_by_step)
    np.testing.assert_array_equal(fresh.cell_times_s, again.cell_times_s)
    for field in DecisionRecord.ROWS:
        np.testing.assert_array_equal(getattr(fresh.decisions, field),
                                      getattr(again.decisions, field))
