"""SUMO backend (issue 11): network build and mapping, SumoCore episodes in micro and meso,
decisions applied through TraCI, teleports counted, errors, CLI. West Oakland, few vehicles."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("libsumo")

from relied.env.cities import city_source, load_city  # noqa: E402
from relied.env.core import RoutingCore  # noqa: E402
from relied.env.network import CityNetwork  # noqa: E402
from relied.env.policies import RoutePolicy, make_policy  # noqa: E402
from relied.env.rollout import run_episode  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402
from relied.env.sumo import SumoError, load_sumo_network, make_core  # noqa: E402
from relied.env.sumo.core import SumoCore  # noqa: E402
from relied.env.sumo.network import SumoNetwork, build_sumo_net  # noqa: E402

CITY = "west-oakland"


@pytest.fixture(scope="module")
def net(oakland):
    return oakland


def test_every_core_edge_maps_to_a_connected_fragment(net, sumo_net):
    rep = sumo_net.report
    assert rep.core_edges == net.n_edges and rep.mapped_edges == net.n_edges
    assert rep.unmapped == []
    junction = {str(i): sumo_net.junction_of[str(i)] for i in net.osm_ids}
    joined = [j for j in junction.values() if j.startswith("cluster_")]
    assert joined  # netconvert joined some OSM nodes into one junction
    for e, frag in enumerate(sumo_net.fragments):
        u, v = (junction[str(net.osm_ids[x])] for x in (net.edge_src[e], net.edge_dst[e]))
        if sumo_net.inside[e]:  # both ends in one joined junction: no SUMO edge
            assert u == v and u.startswith("cluster_") and frag == []
            continue
        assert sumo_net.edge_from[frag[0]] == u and sumo_net.edge_to[frag[-1]] == v
        for a, b in zip(frag[:-1], frag[1:], strict=True):
            assert b in sumo_net.succ[a]
    real = sumo_net.real
    assert rep.inside == int(sumo_net.inside.sum()) and real.sum() + rep.inside == net.n_edges
    # SUMO drives the core's free-flow speed: fragment free-flow within 25% + 10 s of the core
    # (joining junctions cuts the junction area out of the fragments)
    assert np.all(np.abs(sumo_net.sumo_ff[real] - net.freeflow_s[real])
                  <= 0.25 * net.freeflow_s[real] + 10)


def test_every_turn_the_core_allows_is_a_sumo_connection():
    """netconvert leaves out some turns at joined junctions (Monaco: 16, e.g. the right turn
    51691775#0 -> 4230007#0 into Avenue des Spelugues); the second pass adds them, so SUMO
    drives every turn the core allows between edges with fragments."""
    mon = load_city("monaco")
    sn = load_sumo_network(mon, city_source("monaco").path)
    assert sn.report.turns_missing == 0 and sn.missing_connections() == []
    a, b = sn.index["51691775#0"], sn.index["4230007#0"]
    assert b in sn.succ[a]


def test_learner_is_not_sent_round_a_loop_by_a_missing_turn():
    """Without that turn in SUMO, a shortest-path learner from Monaco's trip 26 is masked
    off its best turn, goes round the block, and meets the same junction again, until the
    horizon. With the core's turns connected it arrives near its free-flow time."""
    mon = load_city("monaco")
    sn = load_sumo_network(mon, city_source("monaco").path)
    base = Scenario(city="monaco", n_agents=1000, seed=0, departure_window_s=600).resolve(mon)
    sc = Scenario(city="monaco", n_agents=1, seed=0, horizon_s=900.0,
                  origins=[base.origins[26]], destinations=[base.destinations[26]],
                  departures_s=[0.0])
    core = SumoCore(mon, sc, sn, "meso")
    m = run_episode(core, make_policy("shortest-path")).metrics
    core.close()
    assert m["arrival_rate"] == 1.0
    assert m["mean_travel_time"] < 1.3 * m["mean_freeflow_time"]


def test_unmappable_core_edge_is_reported(net, sumo_net):
    far = [(u, v) for u in range(net.n_nodes) for v in range(net.n_nodes)
           if u != v and net.edge_between(u, v) < 0]
    u, v = far[len(far) // 2]
    extra = CityNetwork.from_edges(
        "west-oakland", net.lon, net.lat, np.append(net.edge_src, u), np.append(net.edge_dst, v),
        np.append(net.length_m, 100.0),
        np.append(net.length_m / net.freeflow_s * 3.6, 30.0), osm_ids=net.osm_ids)
    mapped = SumoNetwork(extra, sumo_net.path)
    bad = extra.edge_between(u, v)
    assert mapped.report.unmapped == [bad]
    assert "1 do not" in mapped.report.line()
    assert not mapped.mapped[bad]


@pytest.mark.parametrize("backend", ["sumo", "sumo-meso"])
def test_episode_in_sumo_same_demand_and_metrics(net, sumo_net, backend):
    sc = Scenario(city=CITY, n_agents=8, seed=3, background_share=0.5,
                  departure_window_s=60.0)
    core = make_core(net, sc, backend, sumo_net=sumo_net)
    ref = RoutingCore(net, sc)
    np.testing.assert_array_equal(core.v_origin, ref.v_origin)
    np.testing.assert_array_equal(core.v_depart, ref.v_depart)
    assert core.obs_dim == ref.obs_dim and core.n_all == 16
    ep = run_episode(core, make_policy("shortest-path"))
    m = ep.metrics
    assert set(run_episode(ref, make_policy("shortest-path")).metrics) <= set(m)
    assert m["arrival_rate"] == 1.0 and m["background_arrival_rate"] == 1.0
    tt = core.travel_times()
    # SUMO drives at the core's free-flow speeds: no trip much faster than its free flow
    assert (tt >= 0.7 * core.ff_od).all() and m["mean_travel_time"] < 4 * m["mean_freeflow_time"]
    # rewards sum to minus the travel time plus the arrival bonus
    np.testing.assert_allclose(ep.returns, -tt / sc.time_scale_s + sc.arrival_bonus, atol=1e-6)
    assert m["removed_vehicles"] == 0 and m["missed_decisions"] == core.missed_by.sum()
    core.close()


def _detour_routes(net, core) -> list[list[int]]:
    """Per learner a loop-free route that leaves its origin by a non-shortest edge, then
    follows the free-flow shortest path (so it differs from shortest-path routing)."""
    from scipy.sparse.csgraph import dijkstra

    _, pred = dijkstra(net.sparse().T.tocsr(), indices=core.dest, return_predecessors=True)
    routes = []
    for i, (o, d) in enumerate(zip(core.origin.tolist(), core.dest.tolist(), strict=True)):
        best = None
        for e in net.out_edges(o).tolist():
            route, node = [o], int(net.edge_dst[e])
            while node != d and node >= 0 and len(route) < net.n_nodes:
                route.append(node)
                node = int(pred[i, node])
            route.append(d)
            if node == d and len(set(route)) == len(route) and route[1] != pred[i, o]:
                best = route
        routes.append(best)
    return routes


def test_decisions_reach_sumo(net, sumo_net):
    """Learners told to take detours drive exactly those node sequences in SUMO: every
    choice was applied (setRoute) before the vehicle reached the junction."""
    sc = Scenario(city=CITY, n_agents=24, seed=5, horizon_s=900.0)
    ref = RoutingCore(net, sc)
    routes = _detour_routes(net, ref)
    have = [r is not None for r in routes]
    assert sum(have) >= 2
    routes = [r if r is not None else [int(o)] for r, o in zip(routes, ref.origin, strict=True)]
    sumo = SumoCore(net, sc, sumo_net, "micro", record_routes=True)
    got = run_episode(sumo, RoutePolicy(sumo, routes)).routes
    shortest = run_episode(RoutingCore(net, sc, record_routes=True),
                           make_policy("shortest-path")).routes
    followed = [i for i, ok in enumerate(have) if ok and sumo.missed_by[i] == 0]
    assert len(followed) >= 2
    for i in followed:
        assert got[i] == routes[i] != shortest[i]
    sumo.close()


def test_observation_and_mask_from_sumo_state(net, sumo_net):
    sc = Scenario(city=CITY, n_agents=10, seed=1)
    core = SumoCore(net, sc, sumo_net, "micro")
    pol = make_policy("congestion-aware")
    busy = 0.0
    while not core.done:
        obs, _, _, _ = core.step(pol(core))
        mask = core.action_mask()
        assert obs.shape == (10, core.obs_dim) and mask.any(axis=1).all()
        assert ((obs[:, 0] == 1) == mask[:, : core.k].any(axis=1)).all()
        busy = max(busy, float(core.count.sum()))
    assert busy >= 1  # occupancy read from SUMO
    assert core.metrics()["arrival_rate"] == 1.0
    core.close()


def test_signals_off_switches_every_sumo_traffic_light_off(net, sumo_net):
    """``signals=False`` (the benchmark's diagnostic row): SUMO's lights run the "off"
    program (o/O: priority rules, no red); by default they run their programs (some red)."""
    sc = Scenario(city=CITY, n_agents=2, seed=0)
    states = {}
    for signals in (True, False):
        core = SumoCore(net, sc, sumo_net, "meso", signals=signals)
        core.reset()
        tls = core.traci.trafficlight
        assert tls.getIDList()  # west-oakland has a signal
        states[signals] = {(tls.getProgram(t), tls.getRedYellowGreenState(t))
                           for t in tls.getIDList()}
        core.close()
    assert all(p == "off" and set(s) <= {"o", "O"} for p, s in states[False])
    assert any("r" in s for _, s in states[True])


@pytest.mark.parametrize("mode", ["micro", "meso"])
def test_teleports_are_counted_and_kept_in_metrics(net, sumo_net, mode):
    """Micro and meso teleports both counted (meso's are in SUMO's statistics only, not in
    TraCI's teleport lists: they were counted 0 before) and attributed to learners."""
    sc = Scenario(city=CITY, n_agents=40, seed=2, horizon_s=900.0)
    core = SumoCore(net, sc, sumo_net, mode, time_to_teleport_s=3.0)
    m = run_episode(core, make_policy("shortest-path")).metrics
    assert m["teleports"] > 0 and m["teleported_learners"] > 0
    assert m["teleports"] >= m["teleported_learners"]
    assert np.isfinite(core.travel_times()).all() and core.travel_times().size == 40
    core.close()


def test_second_core_closes_the_first(net, sumo_net):
    sc = Scenario(city=CITY, n_agents=3, seed=0)
    a = SumoCore(net, sc, sumo_net, "meso")
    SumoCore(net, sc, sumo_net, "meso")
    with pytest.raises(SumoError, match="one SumoCore per process"):
        a.step(np.full(3, a.noop))


def test_netconvert_failure_is_one_line(net, tmp_path):
    bad = tmp_path / "broken.osm"
    bad.write_text("<osm><node id='1' lat='x'")
    with pytest.raises(SumoError, match="netconvert could not build") as err:
        build_sumo_net(net, bad, use_cache=False)
    assert "\n" not in str(err.value) and "broken.osm" in str(err.value)


def test_cli_netconvert_failure_is_one_line_exit_2(monkeypatch):
    """netconvert failing (here: refusing an option) -> one line naming the file, exit 2."""
    from typer.testing import CliRunner

    import relied.env.sumo.network as sumo_network
    from relied.cli import app

    monkeypatch.setattr(sumo_network, "NETCONVERT_OPTIONS",
                        (*sumo_network.NETCONVERT_OPTIONS, "--junctions.corner-detail", "x"))
    res = CliRunner().invoke(app, ["simulate", "--city", CITY, "--agents", "3", "--backend",
                                   "sumo"])
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and "netconvert could not build a SUMO network" in line
    assert "check or re-export the OSM file" in line


def test_sumo_not_installed_message(net, monkeypatch):
    monkeypatch.setitem(sys.modules, "libsumo", None)
    with pytest.raises(SumoError, match=r"pip install 'relied\[sumo\]'"):
        make_core(net, Scenario(city=CITY, n_agents=2), "sumo")
    from typer.testing import CliRunner

    from relied.cli import app

    res = CliRunner().invoke(app, ["simulate", "--city", CITY, "--agents", "3", "--backend",
                                   "sumo-meso"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: SUMO is not installed: pip install 'relied[sumo]'"


def test_cli_simulate_backend(tmp_path):
    from typer.testing import CliRunner

    from relied.cli import app

    runner = CliRunner()
    args = ["simulate", "--city", CITY, "--agents", "5", "--json"]
    core = json.loads(runner.invoke(app, args).stdout)
    res = runner.invoke(app, [*args, "--backend", "sumo-meso"])
    assert res.exit_code == 0, res.output
    sumo = json.loads(res.stdout)
    assert set(core) - {"backend"} <= set(sumo) and sumo["backend"] == "sumo-meso"
    assert sumo["arrival_rate"] == 1.0 and "teleports" in sumo
    bad = runner.invoke(app, [*args, "--backend", "vissim"])
    assert bad.exit_code == 2 and "unknown backend 'vissim'" in bad.stdout


def test_backend_report_ranking_and_carry_over():
    from relied.rl.evaluate import backend_report

    def pol(sp, ca, algo):
        return {"shortest-path": {"mean_travel_time": sp}, "congestion-aware":
                {"mean_travel_time": ca}, "ippo": {"mean_travel_time": algo}}

    rep = backend_report("ippo", pol(200, 180, 160), pol(300, 280, 285))
    assert rep["ranking_core"] == ["ippo", "congestion-aware", "shortest-path"]
    assert rep["ranking_backend"] == ["congestion-aware", "ippo", "shortest-path"]
    assert not rep["ranking_preserved"]
    assert rep["gain_core"] == pytest.approx(0.2) and rep["gain_backend"] == pytest.approx(0.05)
    assert rep["gain_carry_over"] == pytest.approx(0.25)


def test_training_env_on_sumo():
    """The training env steps SUMO (one SUMO per process: several envs need subprocesses)."""
    from relied.rl.envs import BatchRoutingEnv, VectorEnvError, make_vector_env

    sc = Scenario(city=CITY, n_agents=4, seed=0, horizon_s=600.0)
    env = BatchRoutingEnv(sc, backend="sumo-meso")
    assert isinstance(env.core, SumoCore)
    obs, _ = env.reset()
    assert obs.shape == (4, env.core.obs_dim + env.core.k + 1)
    total, done, pol = np.zeros(4), False, make_policy("shortest-path")
    while not done:
        obs, reward, done, _, info = env.step(pol(env.core))
        total += reward
    assert info["arrived"].all() and info["metrics"]["arrival_rate"] == 1.0
    np.testing.assert_allclose(total, -env.core.travel_times() / sc.time_scale_s
                               + sc.arrival_bonus, atol=1e-6)
    env.core.close()
    with pytest.raises(VectorEnvError, match="one SUMO per process"):
        make_vector_env(sc, 2, "dummy", backend="sumo")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained IPPO run on west-oakland (real training, a few hundred env steps)."""
    from typer.testing import CliRunner

    from relied.cli import app

    runs = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(app, ["train", "--city", CITY, "--agents", "4", "--algo", "ippo",
                                   "--steps", "200", "--runs-dir", str(runs), "--no-progress",
                                   "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["run_dir"]


@pytest.mark.parametrize("backend", ["sumo", "sumo-meso"])
def test_eval_trained_run_on_sumo(tiny_run, backend):
    """`relied eval RUN --backend sumo|sumo-meso`: the trained policy and the references run
    in SUMO and in the core; the report says whether the ranking matches and the gain
    carry-over, computed from the two simulators' figures, and counts what SUMO did."""
    from typer.testing import CliRunner

    from relied.cli import app

    res = CliRunner().invoke(app, ["eval", tiny_run, "--backend", backend, "--seeds", "7",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    names = {"ippo", "shortest-path", "congestion-aware", "equilibrium"}
    sumo, core, cmp = out["policies"], out["core_policies"], out["comparison"]
    assert out["backend"] == backend and set(sumo) == set(core) == names
    for p in names:  # figures from SUMO, not copies of the core's
        assert sumo[p]["arrival_rate"] == 1.0 and sumo[p]["teleports"] >= 0
        assert "teleports" not in core[p] and sumo[p]["mean_travel_time"] > 0
    assert any(sumo[p]["mean_travel_time"] != core[p]["mean_travel_time"] for p in names)
    by_tt = sorted(sumo, key=lambda p: sumo[p]["mean_travel_time"])
    assert cmp["ranking_backend"] == by_tt
    assert cmp["ranking_core"] == sorted(core, key=lambda p: core[p]["mean_travel_time"])
    assert cmp["ranking_preserved"] == (cmp["ranking_core"] == cmp["ranking_backend"])
    sp_core = core["shortest-path"]["mean_travel_time"]
    sp = sumo["shortest-path"]["mean_travel_time"]
    assert cmp["gain_core"] == pytest.approx((sp_core - core["ippo"]["mean_travel_time"]) / sp_core)
    assert cmp["gain_backend"] == pytest.approx((sp - sumo["ippo"]["mean_travel_time"]) / sp)
    if cmp["gain_carry_over"] is not None:
        assert cmp["gain_carry_over"] == pytest.approx(cmp["gain_backend"] / cmp["gain_core"])
    assert out["sumo_network"]["unmapped_edges"] == 0


def test_eval_meso_junctions_reaches_sumo(tiny_run, monkeypatch):
    """`relied eval RUN --backend sumo-meso --meso-junctions green-split`: every SUMO core of
    the evaluation is built with that junction model, and the report says which; with another
    backend the flag is a one-line error."""
    from typer.testing import CliRunner

    import relied.env.sumo as sumo
    from relied.cli import app

    built = []
    real = sumo.make_core

    def spy(*args, **kw):
        core = real(*args, **kw)
        built.append(core.meso_junctions)
        return core

    monkeypatch.setattr(sumo, "make_core", spy)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", tiny_run, "--backend", "sumo-meso", "--seeds", "7",
                              "--meso-junctions", "green-split", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["meso_junctions"] == "green-split"
    assert built == ["green-split"]  # one scenario, all four policies on it
    res = runner.invoke(app, ["eval", tiny_run, "--backend", "sumo", "--seeds", "7",
                              "--meso-junctions", "green-split"])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: --meso-junctions applies to --backend sumo-meso only "
                                  "(got --backend sumo); drop it or use --backend sumo-meso")


def test_eval_on_sumo_without_sumo_is_one_line(tiny_run, monkeypatch):
    from typer.testing import CliRunner

    from relied.cli import app

    monkeypatch.setitem(sys.modules, "libsumo", None)
    res = CliRunner().invoke(app, ["eval", tiny_run, "--backend", "sumo", "--seeds", "7"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: SUMO is not installed: pip install 'relied[sumo]'"


@pytest.mark.parametrize("mode", ["micro", "meso"])
def test_lookahead_decides_at_every_junction_on_short_edges(mode, monkeypatch):
    """Monaco's short core edges are crossed within one step: deciding only on the last SUMO
    edge before a junction (no lookahead) misses some decisions; deciding at the next
    junction once it is within LOOKAHEAD_STEPS of driving misses none; the recorded routes
    stay connected from origin to destination either way."""
    import relied.env.sumo.core as sumo_core

    mon = load_city("monaco")
    sn = load_sumo_network(mon, city_source("monaco").path)
    sc = Scenario(city="monaco", n_agents=8, seed=0, departure_window_s=80.0, horizon_s=900.0)
    missed, lookahead = {}, sumo_core.LOOKAHEAD_STEPS
    assert lookahead >= 1
    for steps in (lookahead, 0):
        monkeypatch.setattr(sumo_core, "LOOKAHEAD_STEPS", steps)
        core = SumoCore(mon, sc, sn, mode, record_routes=True)
        ep = run_episode(core, make_policy("shortest-path"))
        missed[steps] = ep.metrics["missed_decisions"]
        assert ep.metrics["arrival_rate"] == 1.0
        for i, route in enumerate(ep.routes):  # chosen edges, one after another, end to end
            assert route[0] == core.origin[i]
            assert sn.node_junction[route[-1]] == sn.node_junction[core.dest[i]]
            pairs = zip(route[:-1], route[1:], strict=True)
            assert all(mon.edge_between(u, v) >= 0 for u, v in pairs)
        core.close()
    assert missed[lookahead] == 0 and missed[0] >= 2


def test_gridlock_diagnosis_variants_attribution_and_plans(net, sumo_net, monkeypatch):
    """benchmarks/sumo_gridlock.py: a variant's SUMO command drops and adds options; queues
    are attributed to the traffic light downstream; each SUMO program is compared with the
    core's plan for the same approaches."""
    from bench_module import load_benchmark

    bench = load_benchmark("sumo_gridlock")
    sc = Scenario(city=CITY, n_agents=3, seed=0)
    core = bench.VariantCore(net, sc, sumo_net, mode="meso", drop=("--meso-junction-control",),
                             add=("--meso-tls-penalty", "1"))
    cmd = core._command()
    assert "--meso-junction-control" not in cmd and cmd[-2:] == ["--meso-tls-penalty", "1"]
    assert "--mesosim" in cmd
    # the core's plans with permissive turns given priority: the programs are built with no
    # green-yield turn direction, and the module's rule is restored after
    import relied.env.sumo.signals as sumo_signals

    seen, build = [], sumo_signals.apply_core_programs
    monkeypatch.setattr(sumo_signals, "apply_core_programs",
                        lambda *a: seen.append(sumo_signals.YIELD_DIRECTIONS) or build(*a))
    default, used = sumo_signals.YIELD_DIRECTIONS, {}
    for yields in (True, False):
        core = bench.VariantCore(net, sc.model_copy(update={"signals": True}), sumo_net,
                                 mode="meso", yields=yields, signal_plans="core")
        core.reset()
        core.close()
        used[yields], seen[:] = set(seen), []
    assert used == {True: {default}, False: {frozenset()}} and "l" in default
    assert default == sumo_signals.YIELD_DIRECTIONS
    kind, _ = bench.junctions(sumo_net.path)
    near = bench.attribution(sumo_net, kind, 300.0)
    lights = {j for j, k in kind.items() if k.startswith("traffic_light")}
    assert lights and set(near.values()) <= lights
    into = [i for i, to in enumerate(sumo_net.edge_to) if to in lights]
    assert all(near[i] == sumo_net.edge_to[i] for i in into)  # a signal's approach: its own
    plans = bench.plan_comparison(net, sumo_net)
    assert plans  # one row per SUMO program
    for p in plans:
        assert 0 < p["sumo_green_share"][0] <= p["sumo_green_share"][1] <= 1
        assert 0 < p["core_green_share"][0] <= 1 and p["cycle_s"] == 90


def test_backends_green_split_goal_compares_the_core_with_the_split_rows():
    """benchmarks/backends.py ``--green-split``: the goal ``core vs SUMO meso green-split on
    the core's plans`` divides the signal-free core's mean trip time by the
    ``sumo-meso-split+core-plans`` row's (not by junction-controlled meso's)."""
    from bench_module import load_benchmark

    bench = load_benchmark("backends")
    rows = [{"backend": b, "policy": p, "wall_s": w, "mean_travel_time": tt}
            for b, w, tts in (("core", 1.0, (150.0, 120.0)), ("core-signals", 1.0, (9.0, 9.0)),
                              ("sumo+core-plans", 60.0, (500.0, 400.0)),
                              ("sumo-meso+core-plans", 20.0, (600.0, 300.0)),
                              ("sumo-meso-split+core-plans", 12.0, (125.0, 100.0)))
            for p, tt in zip(bench.POLICIES, tts, strict=True)]
    g = bench.goals(rows, "core", bench.SUFFIX["core"], bench.SPLIT)
    sp, ca = bench.POLICIES
    assert g[sp]["tt_core_over_meso"] == 150.0 / 125.0 and g[ca]["tt_core_over_meso"] == 1.2
    assert g[sp]["speedup_vs_meso"] == 12.0 and g[sp]["speedup_vs_micro"] == 60.0
    assert g["tt_within_20pct_of_meso_met"] and g["ranking_preserved"]
    assert g["meso_backend"] == bench.SPLIT
    assert bench.goals(rows, "core", bench.SUFFIX["core"])[sp]["tt_core_over_meso"] == 0.25
