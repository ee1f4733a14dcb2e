import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relied.env.core import ARRIVED, AT_NODE, ON_EDGE, WAITING, InvalidActionError, RoutingCore
from relied.env.policies import (
    CongestionAwarePolicy,
    RandomPolicy,
    RoutePolicy,
    ShortestPathPolicy,
)
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario


def small(**kw):
    base = dict(city="west-oakland", n_agents=8, seed=3, min_trip_m=150, horizon_s=900)
    return Scenario(**(base | kw))


def test_scenario_json_round_trip(oakland, tmp_path):
    sc = small(departure_window_s=60).resolve(oakland)
    assert len(sc.origins) == len(sc.destinations) == len(sc.departures_s) == 8
    sc.save(tmp_path / "s.json")
    assert Scenario.load(tmp_path / "s.json") == sc


def test_scenario_rejects_bad_od(oakland):
    with pytest.raises(ValueError, match="node 42 is not in the drivable network"):
        small(origins=[42] * 8, destinations=[42] * 8).resolve(oakland)
    with pytest.raises(ValueError, match="origins has 2 entries for 8 agents"):
        small(origins=[1, 2])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), window=st.sampled_from([0.0, 120.0]))
def test_mask_and_conservation_under_random_play(oakland, seed, n, window):
    core = RoutingCore(oakland, small(n_agents=n, seed=seed, departure_window_s=window))
    policy = RandomPolicy(seed)
    arrived_at = {}
    while not core.done:
        mask = core.action_mask()
        at_node = core.status == AT_NODE
        # valid slots are exactly the node's out-edges; everyone else may only no-op
        np.testing.assert_array_equal(mask[at_node, :-1], core.out_table[core.node[at_node]] >= 0)
        assert not mask[at_node, -1].any() and mask[~at_node, -1].all()
        assert not mask[~at_node, :-1].any()
        before = core.node.copy()
        actions = policy(core)
        core.step(actions)
        entered = at_node & (core.status == ON_EDGE)
        assert np.all(core.net.edge_src[core.edge[entered]] == before[entered])
        # conservation: each agent in exactly one place
        on_edge = core.status == ON_EDGE
        assert np.all(core.edge[on_edge] >= 0) and np.all(core.edge[~on_edge] == -1)
        assert core.occupancy.sum() == on_edge.sum()
        assert np.all(np.isin(core.status, [WAITING, AT_NODE, ON_EDGE, ARRIVED]))
        for i in np.flatnonzero(core.status == ARRIVED):
            arrived_at.setdefault(i, core.arrival_s[i])
            assert core.node[i] == core.dest[i] and core.arrival_s[i] == arrived_at[i]
        assert set(arrived_at) == set(np.flatnonzero(core.status == ARRIVED))


def test_waiting_agents_do_not_move_before_departure(oakland):
    core = RoutingCore(oakland, small(n_agents=1, departures_s=[30.0]))
    while core.time_s < 30:
        assert core.status[0] == WAITING
        core.step(np.array([core.noop]))
    assert core.status[0] == AT_NODE


def test_invalid_action_is_rejected(oakland):
    core = RoutingCore(oakland, small(n_agents=1))
    mask = core.action_mask()[0]
    bad = int(np.flatnonzero(~mask)[0])
    with pytest.raises(InvalidActionError, match="agent 0 at node .* chose slot"):
        core.step(np.array([bad]))


def test_alone_on_free_flow_the_travel_time_is_the_free_flow_time(aguas):
    for seed in range(5):
        core = RoutingCore(aguas, Scenario(n_agents=1, seed=seed))
        ep = run_episode(core, ShortestPathPolicy())
        assert ep.metrics["arrival_rate"] == 1.0
        assert ep.metrics["mean_travel_time"] == pytest.approx(core.ff_od[0], rel=0.02, abs=5.0)


def test_congestion_really_raises_travel_time(aguas):
    alone = Scenario(n_agents=1, seed=11).resolve(aguas)
    crowd = alone.model_copy(update={"n_agents": 60, "origins": alone.origins * 60,
                                     "destinations": alone.destinations * 60,
                                     "departures_s": [0.0] * 60})
    t_alone = run_episode(RoutingCore(aguas, alone), ShortestPathPolicy()).metrics
    t_crowd = run_episode(RoutingCore(aguas, crowd), ShortestPathPolicy()).metrics
    assert t_crowd["mean_travel_time"] > 1.5 * t_alone["mean_travel_time"]


def test_bpr_travel_time_formula(aguas):
    core = RoutingCore(aguas, Scenario(n_agents=1))
    occ = np.zeros(aguas.n_edges)
    occ[0] = aguas.capacity[0] + 1  # capacity plus the vehicle itself
    occ[2] = 1  # a lone vehicle drives at free flow
    occ[1] = 1000.0
    tt = core.edge_travel_time(occ)
    assert tt[0] == pytest.approx(aguas.freeflow_s[0] * 1.15)
    assert tt[1] == pytest.approx(aguas.freeflow_s[1] * 10.0)  # capped at max_slowdown
    np.testing.assert_allclose(tt[2:], aguas.freeflow_s[2:])


def test_same_seed_same_episode_and_other_seed_differs(aguas):
    def play(seed):
        core = RoutingCore(aguas, Scenario(n_agents=30, seed=seed, departure_window_s=60))
        ep = run_episode(core, RandomPolicy(seed), record=True)
        return ep.trajectories

    a, b, c = play(5), play(5), play(6)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.reward, b.reward)
    assert a.obs.shape != c.obs.shape or not np.array_equal(a.obs, c.obs)


def test_shortest_path_arrives_and_beats_random(aguas):
    sc = Scenario(n_agents=40, seed=2)
    sp = run_episode(RoutingCore(aguas, sc), ShortestPathPolicy()).metrics
    rnd = run_episode(RoutingCore(aguas, sc), RandomPolicy(0)).metrics
    assert sp["arrival_rate"] == 1.0
    assert sp["mean_travel_time"] < 0.5 * rnd["mean_travel_time"]
    assert sp["mean_return"] > rnd["mean_return"]


def test_congestion_aware_beats_shortest_path_under_load(aguas):
    sc = Scenario(n_agents=400, seed=0)
    sp = run_episode(RoutingCore(aguas, sc), ShortestPathPolicy()).metrics
    ca = run_episode(RoutingCore(aguas, sc), CongestionAwarePolicy()).metrics
    assert ca["total_delay"] < sp["total_delay"]


def test_route_policy_follows_the_given_route(aguas):
    core = RoutingCore(aguas, Scenario(n_agents=3, seed=4), record_routes=True)
    driven = run_episode(core, ShortestPathPolicy()).routes
    replay = RoutingCore(aguas, Scenario(n_agents=3, seed=4), record_routes=True)
    again = run_episode(replay, RoutePolicy(replay, driven)).routes
    assert again == driven
    assert all(r[-1] == d for r, d in zip(again, core.dest.tolist(), strict=True))
    with pytest.raises(ValueError, match="is not an edge"):
        RoutePolicy(replay, [[0, 0]] * 3)


def test_observation_bounds_and_shape(aguas):
    core = RoutingCore(aguas, Scenario(n_agents=50, seed=1))
    obs = core.reset()
    assert obs.shape == (50, core.obs_dim) and obs.dtype == np.float32
    assert obs.min() >= -1.0 and obs.max() <= 10.0
    # at a decision node the free-flow shortest-path slot has zero detour
    at = core.status == AT_NODE
    detour = obs[at, 4:].reshape(at.sum(), core.k, 5)[:, :, 1]
    valid = obs[at, 4:].reshape(at.sum(), core.k, 5)[:, :, 0] > 0
    assert np.allclose(np.where(valid, detour, np.inf).min(axis=1), 0.0, atol=1e-4)
