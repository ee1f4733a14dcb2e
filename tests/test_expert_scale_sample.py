"""The expert team's simulations on a fleet sample with scaled capacities (TeamConfig.
sim_vehicles, relied.env.sample): nothing changes at or below the setting; above it the
sample holds the planned agents, the capacities scale, demonstrations map back to the
fleet's agent ids."""

import asyncio
import json

import numpy as np
import pytest

from relied.agents.clients import chat_card, make_client
from relied.agents.generate import cache_key, generate_demonstrations
from relied.agents.team import ExpertTeam, TeamConfig
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.forecast import drive
from relied.env.policies import ShortestPathPolicy
from relied.env.presets import load_preset
from relied.env.rollout import DecisionRecord
from relied.env.sample import FleetSample, SampleInfo, sample_fleet, scaled_network
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import execute
from relied.experts.demos import load_batch
from relied.experts.learners import Learners
from relied.rl.demos import load_expert_set

# 40 learners among 200 vehicles; 8 planned (2 blocks of 4); sampled: about 80 vehicles
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120)
SMALL = TeamConfig(demo_agents=8, group_size=4, bound=BoundConfig(epsilon=2.0))
SAMPLED = SMALL.model_copy(update={"sim_vehicles": 80})


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _team(config, scenario=SC, variant=0, learners=None):
    net = load_city(scenario.city)
    view = CityView(net)
    return ExpertTeam(RoutingCore(net, scenario), view, make_client("offline", net, view),
                      config, learners, variant=variant)


def _batch(tmp_path, config, name):
    [path] = generate_demonstrations(SC, tmp_path / name, config=config, use_cache=False)
    return path, *load_batch(path)


def _without_timings(meta) -> dict:
    data = meta.model_dump(mode="json", exclude={"arrays_sha256"})
    for key in ("usage", "usage_per_call"):  # wall time of the model calls
        data["extra"].pop(key)
    return data


def test_at_or_below_the_setting_every_batch_is_bit_identical(tmp_path):
    never = _batch(tmp_path, SMALL.model_copy(update={"sim_vehicles": None}), "never")
    for sim in (SC.n_vehicles, TeamConfig().sim_vehicles):  # at the fleet's size; default
        path, rows, meta = _batch(tmp_path, SMALL.model_copy(update={"sim_vehicles": sim}),
                                  f"at{sim}")
        assert path.with_suffix(".npz").read_bytes() == never[0].with_suffix(
            ".npz").read_bytes()
        assert _without_timings(meta) == _without_timings(never[2])
        assert "fleet_sample" not in json.loads(path.read_text())  # the file as before
    card = chat_card("offline")  # and the cache key too
    off = _team(SMALL.model_copy(update={"sim_vehicles": None}))
    at = _team(SMALL.model_copy(update={"sim_vehicles": SC.n_vehicles}))
    assert off.sample is None and at.sample is None
    assert cache_key(off, card, 0) == cache_key(at, card, 0)


def test_scaled_network_is_a_scaled_copy():
    net = load_city("aguascalientes")
    before = {k: getattr(net, k).copy() for k in ("saturation_vps", "storage", "capacity",
                                                   "freeflow_s", "green_share")}
    half = scaled_network(net, 0.25)
    for k in ("saturation_vps", "storage", "capacity"):
        assert np.allclose(getattr(half, k), 0.25 * before[k])
        assert np.array_equal(getattr(net, k), before[k])  # the original untouched
    for k in ("freeflow_s", "green_share"):
        assert np.array_equal(getattr(half, k), before[k])
    assert half.name != net.name and net.name == "aguascalientes"
    with pytest.raises(ValueError, match="factor"):
        scaled_network(net, 1.5)


def test_the_sample_holds_the_kept_learners_and_the_fleets_trips():
    net = load_city(SC.city)
    full = SC.resolve(net)
    keep = [1, 7, 30, 39]
    s = sample_fleet(net, SC, 80, keep, seed=5)
    ids, bg = s.info.learners, s.info.background
    assert set(keep) <= set(ids) and ids == sorted(set(ids))
    assert len(ids) == round(80 / 200 * 40) and len(ids) + len(bg) == 80
    assert s.scenario.n_vehicles == 80 and s.info.factor == pytest.approx(0.4)
    assert s.scenario.origins == [full.origins[a] for a in ids]
    assert s.scenario.departures_s == [full.departures_s[a] for a in ids]
    assert s.scenario.background_destinations == [full.background_destinations[b] for b in bg]
    assert s.positions([7, 39]) == [ids.index(7), ids.index(39)]
    with pytest.raises(ValueError):
        s.positions([int(np.setdiff1d(np.arange(40), ids)[0])])
    assert sample_fleet(net, SC, 80, keep, seed=5).info == s.info  # seeded
    assert sample_fleet(net, SC, 80, keep, seed=6).info != s.info
    assert sample_fleet(net, SC, SC.n_vehicles, keep) is None  # nothing to sample
    many = sample_fleet(net, SC, 60, list(range(20)), seed=0)  # more kept than the share
    assert many.info.learners == list(range(20)) and many.scenario.n_vehicles == 60
    rebuilt = FleetSample.of(net, SC, SampleInfo.model_validate_json(s.info.model_dump_json()))
    assert rebuilt.scenario == s.scenario and rebuilt.net.name == s.net.name
    for variant in range(3):  # the team's sample holds its planned agents
        team = _team(SAMPLED, variant=variant)
        assert set(team.sampled) <= set(team.sample.info.learners)
        assert team.sim_scenario.n_vehicles == 80 and team.sim_net is team.sample.net


def test_demonstrations_map_back_to_the_fleets_agent_ids(tmp_path):
    path, rows, meta = _batch(tmp_path, SAMPLED, "sampled")
    info = meta.fleet_sample
    assert info is not None and info.target_vehicles == 80
    assert set(meta.demo_agents) <= set(info.learners)
    assert set(rows.agent.tolist()) == set(info.learners) and rows.returns.shape == (40,)
    assert set(map(int, meta.verdict["bounds"])) == set(meta.demo_agents)  # judged: the plan's
    net = load_city(SC.city)
    sample = FleetSample.of(net, meta.scenario, info)
    fresh = execute(sample.net, sample.scenario,
                    routes=sample.routes([index_of(net, r).tolist() for r in meta.routes]))
    for a in meta.demo_agents:
        k = info.learners.index(a)
        mine, theirs = rows.agent == a, fresh.decisions.agent == k
        assert mine.sum() > 0
        for field in ("step", "obs", "mask", "action", "cum"):
            assert np.array_equal(getattr(rows, field)[mine],
                                  getattr(fresh.decisions, field)[theirs]), field
        assert rows.returns[a] == fresh.returns[k]
        full = meta.scenario.resolve(net)  # the stored route is this agent's trip
        assert (meta.routes[a][0], meta.routes[a][-1]) == (full.origins[a],
                                                             full.destinations[a])
    assert meta.metrics["mean_travel_time"] == fresh.metrics["mean_travel_time"]
    expert = load_expert_set([path], RoutingCore(net, meta.scenario), 0.99, accepted_only=False)
    assert set(expert.dec.agent.tolist()) == set(meta.demo_agents)


def test_capacity_scaling_keeps_a_congested_sample_near_the_whole_fleet():
    """aguascalientes-peak (2,500 vehicles, shortest paths +53% over free flow): half the
    fleet on the scaled network drives within 8% of the same learners' whole-fleet travel
    time; on the unscaled network it is more than 20% faster."""
    sc = load_preset("aguascalientes-peak").scenario
    net = load_city(sc.city)
    whole = RoutingCore(net, sc)
    drive(whole, ShortestPathPolicy())
    sample = sample_fleet(net, sc, sc.n_vehicles // 2, seed=0)
    same = whole.travel_times()[sample.learners].mean()
    errors = {}
    for name, on in (("scaled", sample.net), ("unscaled", net)):
        core = RoutingCore(on, sample.scenario)
        drive(core, ShortestPathPolicy())
        errors[name] = core.travel_times().mean() / same - 1.0
    assert abs(errors["scaled"]) < 0.08, errors
    assert errors["unscaled"] < -0.2, errors


def test_learners_on_a_sample_are_asked_under_the_fleets_ids():
    seen = []

    def probs(obs, mask, agent):
        seen.append(np.asarray(agent).tolist())
        return mask / mask.sum(axis=1, keepdims=True)

    trained = []

    def trial(demos, agents=None):
        trained.append((demos.agent.tolist(), demos.returns.tolist(), agents))
        return probs

    sample = FleetSample.of(load_city("west-oakland"), Scenario(city="west-oakland",
                                                                n_agents=10, seed=0),
                            SampleInfo(target_vehicles=3, factor=0.3, learners=[3, 5, 9],
                                       background=[]))
    on = Learners(policy_probs=probs, previous_probs=probs, trial_update=trial,
                  source="test", digest="d").on_sample(sample, 10)
    mask = np.ones((2, 3), dtype=bool)
    on.policy_probs(np.zeros((2, 4)), mask, np.array([0, 2]))
    on.previous_probs(np.zeros((2, 4)), mask, np.array([1, 1]))
    assert seen == [[3, 9], [5, 5]] and on.source == "test" and on.digest == "d"
    rows = DecisionRecord(np.array([0, 0, 1]), np.array([0, 2, 1]), np.zeros((3, 4)),
                          np.ones((3, 3), bool), np.zeros(3, np.int64), np.zeros(3),
                          np.array([-1.0, -2.0, -3.0]), 2)
    successor = on.trial_update(rows, [2])
    agents, returns, judged = trained[0]
    assert agents == [3, 9, 5] and judged == [9]
    assert returns == [0, 0, 0, -1.0, 0, -2.0, 0, 0, 0, -3.0]
    successor(np.zeros((1, 4)), np.ones((1, 3), bool), np.array([1]))
    assert seen[-1] == [5]


def test_a_sampled_team_runs_and_judges_the_planned_agents():
    asked = set()

    def probs(obs, mask, agent):  # the learners' policy, asked under the fleet's ids
        asked.update(np.asarray(agent).tolist())
        return mask / mask.sum(axis=1, keepdims=True)

    team = _team(SAMPLED, learners=Learners(policy_probs=probs))
    out = asyncio.run(team.run())
    assert asked and asked <= set(team.sample.info.learners)
    assert out.demo_agents == team.sampled
    assert set(out.verdict.bounds) == set(team.sampled)
    assert set(out.verdict.violating_agents) <= set(team.sampled)
    run = team.execution(out)
    assert run is not None and run.returns.shape == (team.sim_scenario.n_agents,)
