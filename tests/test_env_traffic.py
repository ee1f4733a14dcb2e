"""Analytic checks of the queue model on synthetic networks: D/D/1 discharge, spillback,
conservation, and the dynamic user equilibrium."""

import numpy as np
import pytest

from relied.env.core import ARRIVED, AT_NODE, ON_EDGE, QUEUED, RoutingCore
from relied.env.equilibrium import solve_equilibrium
from relied.env.network import CityNetwork, NetworkError
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario


def line(saturation, storage, length=(500.0, 200.0, 500.0), speed=36.0):
    """A -> B -> C -> D, one lane each, 10 m/s."""
    n = len(length) + 1
    return CityNetwork.from_edges(
        "line", lon=np.linspace(0, 0.01, n), lat=np.zeros(n), src=np.arange(n - 1),
        dst=np.arange(1, n), length_m=np.array(length), speed_kph=np.full(n - 1, speed),
        saturation_vps=np.array(saturation, dtype=float), green_share=np.ones(n - 1),
        storage=np.array(storage, dtype=float))


def trips(net, departures, **kw):
    m = len(departures)
    return Scenario(city="line", n_agents=m, origins=[0] * m,
                    destinations=[int(net.osm_ids[-1])] * m, departures_s=list(departures),
                    min_trip_m=0, **kw)


@pytest.mark.parametrize("dt", [1.0, 5.0])
def test_bottleneck_discharges_at_capacity_with_dd1_delays(dt):
    mu, lam, n = 0.25, 1.0, 60  # bottleneck 900 veh/h fed at 3,600 veh/h for a minute
    net = line([5.0, mu, 5.0], [1e4, 1e4, 1e4])
    core = RoutingCore(net, trips(net, np.arange(n) / lam, dt_s=dt),
                       record_traversals=True)
    run_episode(core, ShortestPathPolicy())
    assert (core.status == ARRIVED).all()
    ff = net.freeflow_s.sum()
    i = np.arange(n)
    analytic = ff + np.maximum(i / mu - i / lam, 0.0)  # D/D/1: n-th delay n/mu - n/lambda
    tt = core.travel_times()
    assert tt.mean() == pytest.approx(analytic.mean(), rel=0.02)
    np.testing.assert_allclose(tt, analytic, rtol=0.02, atol=0.02 * analytic.max())
    _, edge, _, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
    out = np.sort(left[edge == 1])
    assert (n - 1) / (out[-1] - out[0]) == pytest.approx(mu, rel=0.02)


def test_full_downstream_edge_holds_vehicles_upstream_and_none_is_lost():
    # B->C discharges slowly and holds 5 vehicles: once full, vehicles wait on A->B
    net = line([2.0, 0.1, 2.0], [100, 5, 100], length=(500.0, 40.0, 500.0))
    n = 40
    core = RoutingCore(net, trips(net, np.arange(n) * 0.5, dt_s=1.0, stuck_time_s=1e6,
                                  horizon_s=3000))
    policy = ShortestPathPolicy()
    held_upstream = 0
    while not core.done:
        core.step(policy(core))
        # conserved at every step: every departed vehicle not arrived is on an edge or at
        # its origin, and the edge counts add up to the vehicles on edges
        en_route = np.isin(core.v_status, [AT_NODE, QUEUED, ON_EDGE])
        assert en_route.sum() == core.count.sum() + (en_route & (core.v_edge < 0)).sum()
        assert (core.v_status == ARRIVED).sum() + en_route.sum() + (core.v_status == 0).sum() == n
        assert core.stored[1] <= 5 + 1  # one more for a step at most (decision latency)
        at_stop = (core.edge == 0) & np.isin(core.status, [QUEUED, AT_NODE]) & \
            (core.ready_s[: core.n] <= core.time_s)
        if core.stored[1] >= 5 and at_stop.any():
            held_upstream += 1
    assert held_upstream > 10
    assert (core.status == ARRIVED).all() and core.forced == 0
    # the upstream edge lets vehicles out no faster than the bottleneck drains
    tt = core.travel_times()
    assert tt.max() > (n - 5) / 0.1 * 0.9


def test_stuck_time_releases_a_gridlock():
    net = line([2.0, 0.01, 2.0], [100, 1, 100], length=(500.0, 7.5, 500.0))
    core = RoutingCore(net, trips(net, np.arange(10) * 0.5, stuck_time_s=30, horizon_s=3000))
    run_episode(core, ShortestPathPolicy())
    assert core.forced > 0


def two_routes():
    """O -> A -> D short but narrow, O -> B -> D 50% longer but wide."""
    lon = np.array([0.0, 0.005, 0.005, 0.01])
    lat = np.array([0.0, 0.002, -0.002, 0.0])
    return CityNetwork.from_edges(
        "two", lon=lon, lat=lat, src=np.array([0, 1, 0, 2, 3, 3]),
        dst=np.array([1, 3, 2, 3, 1, 2]), length_m=np.array([400, 400, 600, 600, 400, 600.0]),
        speed_kph=np.full(6, 36.0), saturation_vps=np.array([5, 0.2, 5, 1.0, 5, 5.0]),
        green_share=np.ones(6), storage=np.full(6, 1e4))


def test_equilibrium_splits_traffic_and_beats_shortest_path():
    net = two_routes()
    sc = Scenario(city="two", n_agents=60, origins=[0] * 60, destinations=[3] * 60,
                  departures_s=list(np.arange(60) * 0.5), min_trip_m=0)
    sp = run_episode(RoutingCore(net, sc), ShortestPathPolicy()).metrics
    eq = solve_equilibrium(net, sc, iterations=30, tolerance=0.02)
    routes = {tuple(r) for r in eq.routes}
    assert routes == {(0, 1, 3), (0, 2, 3)}  # both routes used
    assert eq.relative_gap[0] > 0.5 and min(eq.relative_gap) < 0.1
    assert min(eq.mean_travel_time) < 0.8 * sp["mean_travel_time"]


def test_custom_network_with_negative_capacity_is_refused():
    with pytest.raises(NetworkError, match="saturation_vps of edge 1 is -1.0"):
        line([1.0, -1.0, 1.0], [10, 10, 10])


def test_incremental_bookkeeping_equals_recount_on_a_congested_run():
    # the core keeps the en-route set, departures and arrivals by state changes and counts
    # storage over vehicles en route only: on a gridlocking peak they must equal a recount
    # over all vehicles
    from relied.env.cities import load_city

    net = load_city("monaco")
    core = RoutingCore(net, Scenario(city="monaco", n_agents=20, background_share=0.98,
                                     departure_window_s=120, horizon_s=400, seed=3))
    policy = ShortestPathPolicy()
    e = net.n_edges
    full_steps = 0
    while not core.done:
        core.step(policy(core))
        status, edge = core.v_status, core.v_edge
        on = edge >= 0
        queued = np.bincount(edge[on & (status == QUEUED)], minlength=e)
        free = on & (status == AT_NODE)
        free[free] = (queued[edge[free]] == 0) & \
            (core.next_slot[edge[free]] <= core.ready_s[free] + 1e-9)
        stored = core.count - np.bincount(edge[free], minlength=e)
        np.testing.assert_array_equal(core.stored, stored)
        np.testing.assert_array_equal(
            core.active, np.flatnonzero(np.isin(status, [AT_NODE, QUEUED, ON_EDGE])))
        assert core.n_arrived == (status == ARRIVED).sum()
        # the FIFO discharge starts from the clock: a queued vehicle's is never before the
        # moment it reached the stop line
        queued_now = status == QUEUED
        assert (core.clock_s[queued_now] >= core.ready_s[queued_now]).all()
        full_steps += int((stored >= net.storage).any())
    assert full_steps > 100 and core.forced > 0  # the run really congested


def test_departures_while_the_first_edge_is_held_do_not_delay_other_edges():
    # vehicles keep departing onto A->B while its queue's head is held by the full B->C;
    # the uncongested C->D (2 veh/s, fed at 0.1 veh/s) must still be left after exactly its
    # free-flow time: vehicles at their origin are not a held queue of any edge
    net = line([2.0, 0.1, 2.0], [100, 5, 100], length=(500.0, 40.0, 505.0))
    core = RoutingCore(net, trips(net, np.arange(150) * 1.0, stuck_time_s=1e6, horizon_s=3000),
                       record_traversals=True)
    run_episode(core, ShortestPathPolicy())
    assert (core.status == ARRIVED).all()
    _, edge, entered, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
    last = edge == 2
    assert last.sum() == 150
    np.testing.assert_allclose(left[last] - entered[last], net.freeflow_s[2], atol=1e-9)
