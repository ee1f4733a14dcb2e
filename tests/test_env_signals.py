"""Traffic signals: OSM signalised junctions (read as netconvert does), fixed-time plans, and
vehicles waiting for green in the core; off by default with every figure unchanged."""

from pathlib import Path

import numpy as np
import pytest

from relied.env import netcache
from relied.env.cities import CityError, load_city
from relied.env.core import ARRIVED, RoutingCore
from relied.env.network import CityNetwork
from relied.env.policies import CongestionAwarePolicy, RandomPolicy, ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario
from relied.env.signals import CYCLE_S, is_signal_tag, signal_plan

SIGNAL = '<tag k="highway" v="traffic_signals"/>'


def osm_cross(tags: dict[int, str], approach_m: float = 15.0) -> str:
    """A + junction J (node 1) of a primary W-E street and a secondary S-N street, 200 m arms,
    two-way. ``tags``: node id -> tag XML, for J and the nodes ``approach_m`` before it on
    each arm (11 west, 12 east, 13 south, 14 north)."""
    lat0, lon0, m_lat, m_lon = 21.88, -102.29, 1 / 111_000, 1 / 103_000
    a = approach_m
    pos = {1: (0, 0), 2: (0, -200), 3: (0, 200), 4: (-200, 0), 5: (200, 0),
           11: (0, -a), 12: (0, a), 13: (-a, 0), 14: (a, 0), 20: (50, 50), 21: (60, 50)}
    nodes = [f'<node id="{i}" lat="{lat0 + dy * m_lat:.7f}" lon="{lon0 + dx * m_lon:.7f}">'
             f'{tags.get(i, "")}</node>' for i, (dy, dx) in pos.items()]
    ways = ['<way id="100"><nd ref="2"/><nd ref="11"/><nd ref="1"/><nd ref="12"/><nd ref="3"/>'
            '<tag k="highway" v="primary"/></way>',
            '<way id="101"><nd ref="4"/><nd ref="13"/><nd ref="1"/><nd ref="14"/><nd ref="5"/>'
            '<tag k="highway" v="secondary"/></way>',
            # a footway with a pedestrian light: not drivable, never a signal of the network
            '<way id="102"><nd ref="20"/><nd ref="21"/><tag k="highway" v="footway"/></way>']
    return "<?xml version='1.0' encoding='UTF-8'?>\n<osm version=\"0.6\">\n" + \
        "\n".join(nodes + ways) + "\n</osm>\n"


def cross_city(tmp_path: Path, tags: dict[int, str], **kw) -> CityNetwork:
    path = tmp_path / "cross.osm"
    path.write_text(osm_cross(tags, **kw))
    return load_city(path, use_cache=False)


def signalised(net: CityNetwork) -> list[int]:
    return sorted(net.osm_ids[net.signal].tolist())


# ---- OSM -> signalised junctions -------------------------------------------------------------
def test_signal_on_the_junction_node_signalises_it(tmp_path):
    assert signalised(cross_city(tmp_path, {1: SIGNAL})) == [1]


def test_signals_on_every_approach_signalise_the_junction_ahead(tmp_path):
    every = {i: SIGNAL for i in (11, 12, 13, 14)}
    assert signalised(cross_city(tmp_path, every)) == [1]
    # netconvert's --tls.guess-signals: all approaches (slack 0), within 25 m
    three = {i: SIGNAL for i in (11, 12, 13)}
    assert signalised(cross_city(tmp_path, three)) == []
    assert signalised(cross_city(tmp_path, every, approach_m=40.0)) == []
    # a crossing light counts as netconvert reads it
    crossing = {i: '<tag k="crossing" v="traffic_signals"/>' for i in (11, 12, 13, 14)}
    assert signalised(cross_city(tmp_path, crossing)) == [1]


def test_malformed_or_foreign_signal_tags_are_ignored(tmp_path):
    odd = {1: '<tag k="highway" v="TRAFFIC_SIGNALS"/><tag k="crossing" v=""/>',
           11: '<tag k="highway" v=""/>', 12: '<tag k="crossing" v="12"/>',
           13: '<tag k="highway" v="' + "x" * 5000 + '"/>',
           20: SIGNAL, 21: '<tag k="crossing" v="traffic_signals"/>'}  # on the footway
    net = cross_city(tmp_path, odd)
    assert net.n_nodes == 5 and signalised(net) == []
    for tags in ({"highway": None}, {"highway": 5}, {"highway": ["traffic_signals"]},
                 {"crossing": float("nan")}, {}):
        assert not is_signal_tag(tags)
    assert is_signal_tag({"highway": "traffic_signals"})
    # a tag without a value is broken XML for osmnx: one clear error, no traceback
    with pytest.raises(CityError, match="could not be parsed as OSM data"):
        cross_city(tmp_path, {1: '<tag k="highway"/>'})


def test_old_cache_entry_without_signals_is_rebuilt_with_a_warning(tmp_path, capsys):
    path = tmp_path / "cross.osm"
    path.write_text(osm_cross({1: SIGNAL}))
    net = load_city(path)
    digest = netcache.source_sha256(path)
    entry = netcache.entry_path("cross", digest)
    with np.load(entry) as data:  # the entry as a relied without signals wrote it
        old = {k: data[k] for k in data.files if k != "signal"}
    np.savez(entry, **old)
    capsys.readouterr()
    again = load_city(path)
    assert "no 'signal'" in capsys.readouterr().err
    assert signalised(again) == signalised(net) == [1]


def test_shipped_cities_have_the_signalised_junctions_of_their_sumo_nets(oakland, aguas):
    # the core nodes inside netconvert's traffic_light junctions (SUMO 1.28, the backend's
    # options): 2 on west-oakland, 24 on aguascalientes (measured on the SUMO nets)
    assert int(oakland.signal.sum()) == 2
    assert int(aguas.signal.sum()) == 24


# ---- plans --------------------------------------------------------------------------------
def cross_net(saturation: float = 0.5) -> CityNetwork:
    """W(0) -> J(1) -> E(2) and S(3) -> J -> N(4), 500 m at 10 m/s, J signalised."""
    lon = np.array([-0.005, 0.0, 0.005, 0.0, 0.0])
    lat = np.array([0.0, 0.0, 0.0, -0.005, 0.005])
    return CityNetwork.from_edges(
        "cross", lon=lon, lat=lat, src=np.array([0, 1, 3, 1]), dst=np.array([1, 2, 1, 4]),
        length_m=np.full(4, 500.0), speed_kph=np.full(4, 36.0),
        saturation_vps=np.full(4, saturation), green_share=np.ones(4),
        storage=np.full(4, 1e4), signal=np.array([False, True, False, False, False]))


def test_plan_is_two_phases_of_netconvert_defaults():
    net = cross_net()
    plan = signal_plan(net)
    w, s = net.edge_between(0, 1), net.edge_between(3, 1)
    assert plan.cycle_s == CYCLE_S == 90.0
    assert plan.controlled[[w, s]].all() and plan.controlled.sum() == 2
    # two phases, yellow 3 s below 71 km/h: green (90 - 2 * 3) / 2 = 42 s each
    assert plan.green_s[w] == plan.green_s[s] == 42.0
    assert sorted([plan.start_s[w], plan.start_s[s]]) == [0.0, 45.0]
    t = np.array([0.0, 41.9, 42.0, 60.0, 89.9, 90.0])
    np.testing.assert_allclose(plan.next_green(np.full(6, w), t),
                               [0.0, 41.9, 90.0, 90.0, 90.0, 90.0])


def crossing_trips(net, origins, departures, signals=True, dt=1.0):
    dest = {0: 2, 3: 4}
    return Scenario(city="cross", n_agents=len(origins), origins=list(origins),
                    destinations=[dest[o] for o in origins], departures_s=list(departures),
                    min_trip_m=0, signals=signals, dt_s=dt, horizon_s=600)


@pytest.mark.parametrize("dt", [1.0, 5.0])
def test_a_vehicle_meets_red_and_waits_for_green(dt):
    net = cross_net()
    # W->J is green [0, 42) of each cycle, S->J [45, 87). Both reach J at 50 s: the one from
    # the west meets red and leaves at 90 s (arrives 140 s); the one from the south has green
    core = RoutingCore(net, crossing_trips(net, [0, 3], [0.0, 0.0], dt=dt))
    run_episode(core, ShortestPathPolicy())
    assert (core.status == ARRIVED).all()
    np.testing.assert_allclose(core.travel_times(), [140.0, 100.0], atol=1e-9)
    off = RoutingCore(net, crossing_trips(net, [0, 3], [0.0, 0.0], signals=False, dt=dt))
    run_episode(off, ShortestPathPolicy())
    np.testing.assert_allclose(off.travel_times(), [100.0, 100.0], atol=1e-9)


def test_a_queue_at_red_leaves_at_the_saturation_flow_when_green_starts():
    net = cross_net(saturation=0.5)  # 2 s headway during green
    # four from the west reach J at 50, 51, 52, 53 (red): they leave at 90, 92, 94, 96
    core = RoutingCore(net, crossing_trips(net, [0] * 4, [0.0, 1.0, 2.0, 3.0]))
    run_episode(core, ShortestPathPolicy())
    np.testing.assert_allclose(core.v_arrival, [140.0, 142.0, 144.0, 146.0], atol=1e-9)
    # green again [90, 132): one reaching J at 131 s crosses, the next, at 133 s, waits to 180
    core = RoutingCore(net, crossing_trips(net, [0, 0], [81.0, 83.0]))
    run_episode(core, ShortestPathPolicy())
    np.testing.assert_allclose(core.v_arrival, [181.0, 230.0], atol=1e-9)


def test_delay_feature_prices_the_red_light():
    net = cross_net()
    on = RoutingCore(net, crossing_trips(net, [0], [0.0]))
    off = RoutingCore(net, crossing_trips(net, [0], [0.0], signals=False))
    w = net.edge_between(0, 1)
    # empty edges: no queue delay, plus the mean red wait r^2 / 2C = 48^2 / 180 s
    assert off.edge_delay()[w] == 0.0
    assert on.edge_delay()[w] == pytest.approx(48.0 ** 2 / 180.0)
    assert on.edge_delay()[net.edge_between(1, 2)] == 0.0


# ---- in the shipped scenarios -------------------------------------------------------------
def test_signals_off_leaves_the_preset_figure_bit_identical(aguas):
    from relied.env.presets import load_preset

    sc = load_preset("aguascalientes-peak").scenario.model_copy(update={"seed": 1})
    assert not sc.signals and "signals" not in sc.model_dump_json()
    ep = run_episode(RoutingCore(aguas, sc), CongestionAwarePolicy())
    assert ep.metrics["mean_travel_time"] == 159.31467641901725
    on = run_episode(RoutingCore(aguas, sc.model_copy(update={"signals": True})),
                     CongestionAwarePolicy())
    assert on.metrics["mean_travel_time"] > ep.metrics["mean_travel_time"] + 5


def test_rewards_sum_exactly_to_minus_travel_time_with_signals(aguas):
    for horizon, policy in ((1800.0, ShortestPathPolicy()), (240.0, RandomPolicy(1))):
        sc = Scenario(city="aguascalientes", n_agents=60, seed=2, horizon_s=horizon,
                      departure_window_s=60, background_share=0.8, min_trip_m=150,
                      signals=True)
        core = RoutingCore(aguas, sc)
        ep = run_episode(core, policy, record=True)
        arrived = core.status == ARRIVED
        want = -core.travel_times() / sc.time_scale_s + np.where(
            arrived, sc.arrival_bonus, -sc.timeout_penalty)
        np.testing.assert_allclose(ep.trajectories.reward.sum(axis=0), want, atol=1e-6)


def test_scenario_serialises_signals_only_when_on():
    assert "signals" not in Scenario().model_dump()
    on = Scenario(signals=True)
    assert Scenario.model_validate_json(on.model_dump_json()).signals is True


def test_no_vehicle_crosses_a_red_light_in_congestion(aguas):
    from relied.env.presets import load_preset

    sc = load_preset("aguascalientes-peak").scenario.model_copy(
        update={"signals": True, "horizon_s": 900.0})
    core = RoutingCore(aguas, sc, record_traversals=True)
    run_episode(core, ShortestPathPolicy())
    v, edge, entered, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
    plan = core.signal_plan
    last = np.zeros(v.size, dtype=bool)  # a trip's last traversal leaves the network
    order = np.lexsort((left, v))
    last[order] = np.append(v[order][1:] != v[order][:-1], True) & \
        (core.v_status[v[order]] == ARRIVED)
    crossing = plan.controlled[edge] & ~last
    assert crossing.sum() > 500  # the peak really sends traffic through the lights
    u = np.mod(left[crossing] - plan.start_s[edge[crossing]], plan.cycle_s)
    assert (u < plan.green_s[edge[crossing]] + 1e-6).all()
    # and the lights cost time: more than a few seconds per crossing on average
    stopped = left[crossing] - entered[crossing] - aguas.freeflow_s[edge[crossing]]
    assert stopped.mean() > 5.0


def test_simulate_signals_flag():
    import json

    from typer.testing import CliRunner

    from relied.cli import app

    def run(*flags):
        out = CliRunner().invoke(app, ["simulate", "--city", "aguascalientes", "--agents", "40",
                                       "--departure-window", "120", "--json", *flags])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    off, on = run(), run("--signals")
    assert off["signals"] is False and on["signals"] is True
    assert on["mean_travel_time"] > off["mean_travel_time"]
    assert run("--no-signals")["mean_travel_time"] == off["mean_travel_time"]
