import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relied.env.core import (
    ARRIVED,
    AT_NODE,
    GLOBAL_FEATURES,
    ON_EDGE,
    QUEUED,
    SLOT_FEATURES,
    WAITING,
    InvalidActionError,
    RoutingCore,
)
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
    sc = small(departure_window_s=60, background_share=0.5).resolve(oakland)
    assert len(sc.origins) == len(sc.destinations) == len(sc.departures_s) == 8
    assert len(sc.background_origins) == sc.n_background == 8
    sc.save(tmp_path / "s.json")
    assert Scenario.load(tmp_path / "s.json") == sc


def test_scenario_rejects_bad_input(oakland):
    with pytest.raises(ValueError, match="node 42 is not in the drivable network"):
        small(origins=[42] * 8, destinations=[42] * 8).resolve(oakland)
    with pytest.raises(ValueError, match="origins has 2 entries for 8 agents"):
        small(origins=[1, 2])
    with pytest.raises(ValueError, match="background_share"):
        small(background_share=1.5)
    with pytest.raises(ValueError, match="departure_window_s .* must be shorter than horizon"):
        small(departure_window_s=900)


def test_background_leaves_learner_trips_unchanged(aguas):
    alone = Scenario(n_agents=30, seed=4).resolve(aguas)
    crowd = Scenario(n_agents=30, seed=4, background_share=0.9).resolve(aguas)
    assert crowd.origins == alone.origins and crowd.destinations == alone.destinations
    assert crowd.n_vehicles == 300


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), window=st.sampled_from([0.0, 120.0]),
       share=st.sampled_from([0.0, 0.8]))
def test_mask_and_conservation_under_random_play(oakland, seed, n, window, share):
    core = RoutingCore(oakland, small(n_agents=n, seed=seed, departure_window_s=window,
                                      background_share=share))
    policy = RandomPolicy(seed)
    arrived_at = {}
    while not core.done:
        mask = core.action_mask()
        at_node = core.status == AT_NODE
        # valid slots are out-edges of the node; everyone else may only no-op
        assert not (mask[at_node, :-1] & (core.out_table[core.node[at_node]] < 0)).any()
        assert mask[at_node, :-1].any(axis=1).all()
        assert not mask[at_node, -1].any() and mask[~at_node, -1].all()
        assert not mask[~at_node, :-1].any()
        before = core.node.copy()
        core.step(policy(core))
        entered = at_node & (core.status == ON_EDGE)
        assert np.all(core.net.edge_src[core.edge[entered]] == before[entered])
        # conservation: every vehicle in exactly one place, edge counts add up
        st_all, edge = core.v_status, core.v_edge
        assert np.isin(st_all, [WAITING, AT_NODE, QUEUED, ON_EDGE, ARRIVED]).all()
        placed = np.isin(st_all, [AT_NODE, QUEUED, ON_EDGE]) & (edge >= 0)
        np.testing.assert_array_equal(
            core.count, np.bincount(edge[placed], minlength=core.net.n_edges))
        assert (edge[np.isin(st_all, [ON_EDGE])] >= 0).all()
        assert (edge[np.isin(st_all, [WAITING, ARRIVED])] == -1).all()
        for i in np.flatnonzero(core.status == ARRIVED):
            arrived_at.setdefault(i, core.arrival_s[i])
            assert core.node[i] == core.dest[i] and core.arrival_s[i] == arrived_at[i]


def test_waiting_agents_do_not_move_before_departure(oakland):
    core = RoutingCore(oakland, small(n_agents=1, departures_s=[30.0]))
    while core.time_s < 30:
        assert core.status[0] == WAITING
        core.step(np.array([core.noop]))
    assert core.status[0] == AT_NODE


def test_invalid_and_u_turn_actions_are_rejected(oakland):
    core = RoutingCore(oakland, small(n_agents=1))
    mask = core.action_mask()[0]
    with pytest.raises(InvalidActionError, match="agent 0 at node .* chose slot"):
        core.step(np.array([int(np.flatnonzero(~mask)[0])]))


def test_mask_forbids_the_way_back_unless_it_is_the_only_one(oakland):
    """One mask for every face of the env (core, PettingZoo, training, references)."""
    core = RoutingCore(oakland, small(n_agents=12, seed=4))
    policy = RandomPolicy(0)
    masked = dead_ends = 0
    while not core.done:
        mask = core.action_mask()
        for i in np.flatnonzero(core.status == AT_NODE):
            slots = core.out_table[core.node[i]]
            valid = slots >= 0
            back = valid & (core.edge[i] >= 0) & (core.net.edge_dst[np.maximum(slots, 0)]
                                                  == core.net.edge_src[core.edge[i]])
            if back.any() and (valid & ~back).any():
                assert not mask[i, :-1][back].any()
                assert (mask[i, :-1] == (valid & ~back)).all()
                masked += 1
            else:  # no way back, or it is the only way on (dead end): nothing masked
                assert (mask[i, :-1] == valid).all()
                dead_ends += back.any()
        core.step(policy(core))
    assert masked > 0


def test_alone_on_free_flow_the_travel_time_is_exactly_the_free_flow_time(aguas):
    for seed in range(5):
        for dt in (1.0, 5.0):
            core = RoutingCore(aguas, Scenario(n_agents=1, seed=seed, dt_s=dt))
            ep = run_episode(core, ShortestPathPolicy())
            assert ep.metrics["arrival_rate"] == 1.0
            assert ep.metrics["mean_travel_time"] == pytest.approx(core.ff_od[0], abs=1e-9)


@pytest.mark.parametrize("city", ["west-oakland", "aguascalientes", "monaco", "north-bayreuth"])
def test_rewards_sum_exactly_to_minus_travel_time(city):
    """Every agent's rewards sum to -(travel time)/time_scale + bonus (or - penalty), to 1e-6,
    under congestion, with background traffic, and with agents cut off by the horizon."""
    from relied.env.cities import load_city

    net = load_city(city)
    for horizon, policy in ((1800.0, ShortestPathPolicy()), (240.0, RandomPolicy(1))):
        sc = Scenario(city=city, n_agents=60, seed=2, horizon_s=horizon, departure_window_s=60,
                      background_share=0.8, min_trip_m=150)
        core = RoutingCore(net, sc)
        ep = run_episode(core, policy, record=True)
        arrived = core.status == ARRIVED
        want = -core.travel_times() / sc.time_scale_s + np.where(
            arrived, sc.arrival_bonus, -sc.timeout_penalty)
        np.testing.assert_allclose(ep.trajectories.reward.sum(axis=0), want, atol=1e-6)
        if horizon < 1000:
            assert not arrived.all()  # the cut-off case really happened


@pytest.mark.parametrize("n", [200, 1_200])  # (1,200: cost-to-go rows reused 30 steps)
def test_unrecorded_episode_builds_no_observation_and_equals_the_recorded_one(aguas, n,
                                                                              monkeypatch):
    """run_episode drives the core with advance() unless it records: only reset observes,
    and returns, routes and metrics are those of the episode stepped with observations."""
    observed = []
    real = RoutingCore.observe
    monkeypatch.setattr(RoutingCore, "observe",
                        lambda self, rows=None: observed.append(1) or real(self, rows))
    sc = Scenario(n_agents=n, seed=3, departure_window_s=120.0, background_share=0.5)
    runs = []
    for record in (False, True):
        core = RoutingCore(aguas, sc, record_routes=True)
        observed.clear()
        ep = run_episode(core, CongestionAwarePolicy(), record=record)
        runs.append((ep, len(observed)))
    (plain, seen), (recorded, seen_recorded) = runs
    assert seen == 1 and seen_recorded == recorded.steps + 1
    assert np.array_equal(plain.returns, recorded.returns)
    assert plain.routes == recorded.routes
    assert {k: v for k, v in plain.metrics.items() if k != "agent_steps_per_s"} == \
        {k: v for k, v in recorded.metrics.items() if k != "agent_steps_per_s"}


def test_congestion_really_raises_travel_time(aguas):
    alone = Scenario(n_agents=1, seed=11).resolve(aguas)
    crowd = alone.model_copy(update={"n_agents": 200, "origins": alone.origins * 200,
                                     "destinations": alone.destinations * 200,
                                     "departures_s": [0.0] * 200})
    t_alone = run_episode(RoutingCore(aguas, alone), ShortestPathPolicy()).metrics
    t_crowd = run_episode(RoutingCore(aguas, crowd), ShortestPathPolicy()).metrics
    assert t_crowd["mean_travel_time"] > 1.5 * t_alone["mean_travel_time"]


def test_bpr_model_keeps_its_formula(aguas):
    core = RoutingCore(aguas, Scenario(n_agents=1, traffic_model="bpr"))
    edges = np.array([0, 1, 2])
    others = np.array([aguas.capacity[0], 1000.0, 0.0])
    tt = core._bpr_time(edges, others)
    assert tt[0] == pytest.approx(aguas.freeflow_s[0] * 1.15)
    assert tt[1] == pytest.approx(aguas.freeflow_s[1] * 10.0)  # capped at max_slowdown
    assert tt[2] == pytest.approx(aguas.freeflow_s[2])


def test_same_seed_same_episode_and_other_seed_differs(aguas):
    def play(seed):
        core = RoutingCore(aguas, Scenario(n_agents=30, seed=seed, departure_window_s=60,
                                           background_share=0.5,
                                           background_choice="logit"))
        ep = run_episode(core, RandomPolicy(seed), record=True)
        return ep.trajectories

    a, b, c = play(5), play(5), play(6)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.reward, b.reward)
    assert a.obs.shape != c.obs.shape or not np.array_equal(a.obs, c.obs)


def test_logit_background_never_loops_and_arrives(aguas):
    sc = Scenario(n_agents=5, seed=3, background_share=0.95, background_choice="logit",
                  departure_window_s=300)
    core = RoutingCore(aguas, sc)
    policy = ShortestPathPolicy()
    while core.t < sc.n_steps and not (core.v_status == ARRIVED).all():
        core.step(policy(core))  # learners may be done before the background is
    assert (core.v_status[core.n:] == ARRIVED).all()


def test_shortest_path_arrives_and_beats_random(aguas):
    sc = Scenario(n_agents=40, seed=2)
    sp = run_episode(RoutingCore(aguas, sc), ShortestPathPolicy()).metrics
    rnd = run_episode(RoutingCore(aguas, sc), RandomPolicy(0)).metrics
    assert sp["arrival_rate"] == 1.0
    assert sp["mean_travel_time"] < 0.5 * rnd["mean_travel_time"]
    assert sp["mean_return"] > rnd["mean_return"]


def test_congestion_aware_beats_shortest_path_on_the_peak_preset(aguas):
    from relied.env.presets import load_preset

    sc = load_preset("aguascalientes-peak").scenario
    sp = run_episode(RoutingCore(aguas, sc), ShortestPathPolicy()).metrics
    ca = run_episode(RoutingCore(aguas, sc), CongestionAwarePolicy()).metrics
    assert sp["delay_ratio"] > 0.3
    assert ca["mean_travel_time"] < 0.95 * sp["mean_travel_time"]


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
    per = obs[at, 4:].reshape(at.sum(), core.k, 7)
    detour, valid = per[:, :, 1], per[:, :, 0] > 0
    assert np.allclose(np.where(valid, detour, np.inf).min(axis=1), 0.0, atol=1e-4)


def test_live_detour_is_zero_on_the_congestion_aware_choice(aguas):
    """Under load, the live-detour feature points where the congestion-aware reference goes:
    its slot is the one with zero live detour, and the feature differs from the free-flow one."""
    core = RoutingCore(aguas, Scenario(n_agents=300, seed=2, departure_window_s=60.0))
    core.reset()
    policy, checked, differs = CongestionAwarePolicy(), 0, 0
    while not core.done and core.time_s < 400:
        obs, actions = core.observe(), policy(core)
        at = np.flatnonzero(core.status == AT_NODE)
        per = obs[at, GLOBAL_FEATURES:].reshape(at.size, core.k, SLOT_FEATURES)
        live, free = per[:, :, 6], per[:, :, 1]
        assert np.allclose(live[np.arange(at.size), actions[at]], 0.0, atol=1e-4)
        assert np.all(live[per[:, :, 0] == 0] == 0.0)
        # where the free-flow best slot is not the best one now, the live view says so
        sp_slot = np.argmin(np.where(per[:, :, 0] > 0, free, np.inf), axis=1)
        differs += int(np.count_nonzero(live[np.arange(at.size), sp_slot] > 0.05))
        checked += at.size
        core.step(actions)
    assert checked > 300 and differs > 10


def test_live_cost_to_go_is_computed_once_per_step_and_renewed_by_the_next(aguas, monkeypatch):
    """The observation and the congestion-aware policy share one live cost-to-go per step; a
    step renews it from the new queues."""
    import relied.env.live as live_module

    calls = []
    real = live_module.cost_to_go
    monkeypatch.setattr(live_module, "cost_to_go",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    core = RoutingCore(aguas, Scenario(n_agents=200, seed=3, departure_window_s=30.0))
    core.reset()
    policy, steps = CongestionAwarePolicy(), 0
    while not core.done and core.time_s < 120:
        before = core.live_to_go()
        calls.clear()
        core.step(policy(core))  # the step observes the new state
        core.observe()
        actions = policy(core)
        deciding = bool((core.status == AT_NODE).any())
        assert len(calls) == int(deciding)
        assert core.live_to_go()[0] is not before[0]
        steps += int(deciding) and int(np.any(actions < core.noop))
    assert steps > 5


def test_observe_rows_equal_the_rows_of_the_full_observation(aguas):
    """``observe(rows)`` builds exactly those rows of ``observe()``; a core that observes only
    its deciding learners after ``advance`` (the fast trainer's env) stays identical to one
    that steps with full observations, live cost-to-go cache (reused 5 steps) included."""
    from relied.env.live import LiveCostToGo

    scenario = Scenario(n_agents=200, seed=5, departure_window_s=60.0)
    full, part = RoutingCore(aguas, scenario), RoutingCore(aguas, scenario)
    for core in (full, part):
        core._live = LiveCostToGo(aguas, core.n, reuse=5)
    obs = full.reset()
    assert np.array_equal(part.reset(), obs)
    policy, rng, checked, n_arrived = ShortestPathPolicy(), np.random.default_rng(0), 0, 0
    while not full.done:
        actions = policy(full)
        obs = full.step(actions)[0]
        part.advance(actions)
        rows = np.flatnonzero(part.action_mask()[:, : part.k].any(axis=1))
        assert np.array_equal(part.observe(rows), obs[rows])
        some = rng.choice(full.n, 17, replace=False)  # any learners: waiting, arrived, ...
        assert np.array_equal(full.observe(some), obs[some])
        checked += rows.size
        n_arrived = int((full.status == ARRIVED).sum())
    assert np.array_equal(part.observe(), full.observe())
    assert checked > 500 and n_arrived > 100
    assert part.observe(np.zeros(0, dtype=np.int64)).shape == (0, full.obs_dim)
