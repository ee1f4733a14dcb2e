"""A fleet sample scales the queue model's stuck time like the capacities
(``SampleInfo.stuck_time_scaled``; relied.env.sample): a blocked queue releases ``factor``
times as many vehicles per second, so a gridlocking fleet's sample is not too fast; records
written before the field rebuild with the fleet's stuck time, as they were simulated; the
expert cache tells the two apart."""

import json

import numpy as np
import pytest

from relied.agents.clients import chat_card, make_client
from relied.agents.generate import cache_key
from relied.agents.team import ExpertTeam, TeamConfig
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.forecast import drive
from relied.env.policies import ShortestPathPolicy
from relied.env.presets import load_preset
from relied.env.sample import FleetSample, SampleInfo, sample_fleet
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig

# tests/test_expert_scale_sample.py's case: 40 learners among 200 vehicles, about 80 sampled
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120)
SAMPLED = TeamConfig(demo_agents=8, group_size=4, bound=BoundConfig(epsilon=2.0),
                     sim_vehicles=80)


def test_a_sample_divides_the_stuck_time_by_its_factor():
    net = load_city(SC.city)
    s = sample_fleet(net, SC, 80, [1, 7], seed=5)
    assert s.info.stuck_time_scaled and s.info.factor == pytest.approx(0.4)
    assert s.scenario.stuck_time_s == pytest.approx(SC.stuck_time_s / 0.4)
    rebuilt = FleetSample.of(net, SC, SampleInfo.model_validate_json(s.info.model_dump_json()))
    assert rebuilt.scenario == s.scenario
    stored = json.loads(s.info.model_dump_json())  # a record written before the field
    del stored["stuck_time_scaled"]
    old = FleetSample.of(net, SC, SampleInfo.model_validate(stored))
    assert not old.info.stuck_time_scaled and old.scenario.stuck_time_s == SC.stuck_time_s
    assert old.scenario.model_copy(update={"stuck_time_s": s.scenario.stuck_time_s}) == \
        s.scenario  # nothing else differs


def test_the_cache_key_of_a_sampled_team_names_its_sample():
    net = load_city(SC.city)
    view = CityView(net)
    core = RoutingCore(net, SC)
    card = chat_card("offline")

    def key(sample):
        team = ExpertTeam(core, view, make_client("offline", net, view), SAMPLED,
                          sample=sample)
        return cache_key(team, card, 0)

    team = ExpertTeam(core, view, make_client("offline", net, view), SAMPLED)
    info = team.sample.info
    before = FleetSample.of(net, SC, info.model_copy(update={"stuck_time_scaled": False}))
    assert key(team.sample) == cache_key(team, card, 0)
    assert key(before) != key(team.sample)


def test_a_gridlocking_fleets_sample_keeps_near_its_travel_times():
    """aguascalientes-peak at twice the learners departing in half the time (5,000 vehicles;
    the whole fleet gridlocks: most trips unfinished at the horizon, stuck entries forced):
    tenth-size samples with the stuck time scaled are within 6% of the same learners'
    whole-fleet mean travel time on average over 3 seeds; with the fleet's stuck time each
    forces far more entries and is more than 15% too fast."""
    sc = load_preset("aguascalientes-peak").scenario.model_copy(
        update={"n_agents": 400, "departure_window_s": 300.0, "horizon_s": 1200.0})
    net = load_city(sc.city)
    whole = RoutingCore(net, sc)
    drive(whole, ShortestPathPolicy())
    assert whole.metrics()["arrival_rate"] < 0.5 and whole.forced > 0.5 * sc.n_vehicles
    errors = {True: [], False: []}
    for seed in range(3):
        info = sample_fleet(net, sc, sc.n_vehicles // 10, seed=seed).info
        same = whole.travel_times()[info.learners].mean()
        forced = {}
        for scaled in (True, False):
            s = FleetSample.of(net, sc, info.model_copy(update={"stuck_time_scaled": scaled}))
            core = RoutingCore(s.net, s.scenario)
            drive(core, ShortestPathPolicy())
            errors[scaled].append(core.travel_times().mean() / same - 1.0)
            forced[scaled] = core.forced
        assert forced[False] > 3 * forced[True]
    assert abs(np.mean(errors[True])) < 0.06, errors
    assert np.mean(errors[False]) < -0.15, errors
