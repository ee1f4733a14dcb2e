"""The expert planners see the traffic forecast: the offline planner routes on it, an LLM gets
it through its tools and the task's delayed corridors."""

import asyncio
import json

import numpy as np
import pytest
from autogen_core import CancellationToken
from autogen_core.models import SystemMessage, UserMessage

from relied.agents.offline import OfflinePlannerClient
from relied.agents.plans import JointPlan
from relied.agents.prompt import group_task, planner_system, read_data_block
from relied.agents.tools import planner_tools
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.forecast import TrafficForecast
from relied.env.scenario import Scenario, index_of
from relied.experts.critic import execute

PEAK = Scenario(city="aguascalientes", n_agents=100, seed=3, background_share=0.96,
                departure_window_s=600.0, horizon_s=1800.0, dt_s=1.0)


@pytest.fixture(scope="module")
def setting():
    net = load_city("aguascalientes")
    return net, CityView(net), RoutingCore(net, PEAK), TrafficForecast.simulate(net, PEAK)


def _offline_plan(net, view, core, forecast) -> list[list[int]]:
    group = list(range(core.n))
    delay = None if forecast is None else view.load_rows(np.round(forecast.mean_delay()))
    messages = [SystemMessage(content=planner_system(group)),
                UserMessage(content=group_task(core, view, group, expected_delay=delay),
                            source="user")]
    client = OfflinePlannerClient(net, view, forecast)
    result = asyncio.run(client.create(messages, json_output=JointPlan))
    plan = JointPlan.model_validate_json(result.content)
    return [index_of(net, p.route).tolist() for p in plan.plans]


def test_offline_planner_on_the_forecast_beats_shortest_path_and_its_blind_self(setting):
    net, view, core, forecast = setting
    sp = execute(net, PEAK).metrics["mean_travel_time"]
    seeing = execute(net, PEAK, routes=_offline_plan(net, view, core, forecast))
    blind = execute(net, PEAK, routes=_offline_plan(net, view, core, None))
    assert seeing.metrics["arrival_rate"] == 1.0
    # the learners are 4% of the traffic: without the forecast the planner cannot see the
    # queues the background traffic builds; with it, it routes around them
    assert seeing.metrics["mean_travel_time"] < 0.95 * sp
    assert seeing.metrics["mean_travel_time"] < 0.95 * blind.metrics["mean_travel_time"]


def test_llm_tools_and_task_carry_the_forecast(setting):
    net, view, core, forecast = setting
    tools = {t.name: t for t in planner_tools(view, None, forecast)}
    e = int(np.argmax(forecast.mean_delay()))
    worst = int(np.argmax(forecast.times[e]))
    u, v = int(net.edge_src[e]), int(net.edge_dst[e])

    async def call(name, **args):
        return json.loads(await tools[name].run_json(args, CancellationToken()))

    at_peak = asyncio.run(call("route_travel_time", route=[view.ref(u), view.ref(v)],
                               depart_s=worst * 60.0))
    assert at_peak["forecast_s"] == pytest.approx(forecast.times[e, worst], abs=0.1)
    assert at_peak["forecast_s"] > at_peak["freeflow_s"] + 10
    # the fastest path on the forecast is never slower than the free-flow one, and for some
    # agents leaving in the peak it is much faster
    gains = []
    for i in range(12):
        o, d, t = int(core.origin[i]), int(core.dest[i]), float(core.depart_s[i])
        fast = asyncio.run(call("shortest_path", from_ref=view.ref(o), to_ref=view.ref(d),
                                depart_s=t))
        free = view.shortest(o, d)
        free_s = forecast.route_time(
            [net.edge_between(a, b) for a, b in zip(free[:-1], free[1:], strict=True)], t)
        gains.append(free_s - fast["forecast_s"])
    assert min(gains) >= -0.06 and max(gains) > 5.0
    task = group_task(core, view, [0, 1], expected_delay=view.load_rows(
        np.round(forecast.mean_delay())))
    rows = read_data_block(task)["expected_delay"]
    assert rows and all(":" in r for r in rows.values())
    assert "Calle" not in json.dumps(rows)  # numbers and ids only, no street names
