"""The traffic forecast: measured edge times by entry window, and what they predict."""

import numpy as np
import pytest

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.forecast import TrafficForecast
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario

PEAK = Scenario(city="aguascalientes", n_agents=100, seed=3, background_share=0.96,
                departure_window_s=600.0, horizon_s=1800.0, dt_s=1.0)


@pytest.fixture(scope="module")
def aguas():
    return load_city("aguascalientes")


@pytest.fixture(scope="module")
def forecast(aguas):
    return TrafficForecast.simulate(aguas, PEAK)


def test_forecast_holds_queues_where_they_form(aguas, forecast):
    assert forecast.times.shape == (aguas.n_edges, int(np.ceil(1800.0 / 60.0)) + 1)
    # experienced times never beat free flow (1 s steps round a traversal by < 1 s)
    assert np.all(forecast.times >= aguas.freeflow_s[:, None] - 1.0)
    delay = forecast.mean_delay()
    assert (delay > 5.0).sum() >= 10  # queues on some edges...
    assert np.median(delay) < 1.0  # ...not everywhere
    # after the peak has drained the network is back at free flow
    assert np.allclose(forecast.times[:, -1], aguas.freeflow_s)


def test_forecast_predicts_the_travel_time_of_the_run_it_measured(aguas, forecast):
    core = RoutingCore(aguas, PEAK, record_routes=True)
    routes = run_episode(core, ShortestPathPolicy()).routes
    predicted = np.array([
        forecast.route_time([aguas.edge_between(u, v) for u, v in zip(r[:-1], r[1:],
                                                                        strict=True)], t)
        for r, t in zip(routes, core.depart_s, strict=True)])
    driven = core.travel_times()
    assert driven.mean() > 1.2 * core.ff_od.mean()  # the peak is congested
    assert abs(predicted.mean() / driven.mean() - 1.0) < 0.10
    free = np.array([forecast.freeflow_s[[aguas.edge_between(u, v) for u, v in
                                          zip(r[:-1], r[1:], strict=True)]].sum()
                     for r in routes])
    # the forecast explains the delay, free flow does not
    assert abs(predicted.mean() - driven.mean()) < 0.3 * abs(free.mean() - driven.mean())


def test_forecast_lookup_by_time(forecast):
    e = int(np.argmax(forecast.mean_delay()))
    b = int(np.argmax(forecast.times[e]))
    assert forecast.at(e, b * 60.0 + 30.0) == forecast.times[e, b]
    assert forecast.at(e, 10 ** 6) == forecast.times[e, -1]  # later: the last window holds
    assert forecast.route_time([e, e], 0.0) >= 2 * forecast.freeflow_s[e] - 2.0
    assert forecast.digest() == TrafficForecast(forecast.times.copy(), 60.0,
                                                forecast.freeflow_s).digest()
