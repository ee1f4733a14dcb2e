"""SUMO running the core's signal plans (``SumoCore(signal_plans="core")``, issue 11): each
SUMO link green for the core's share of the cycle from the core's start, uncovered links
reported, and a run that differs from netconvert's programs. West Oakland, few vehicles."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("libsumo")

from relied.env.policies import make_policy  # noqa: E402
from relied.env.scenario import Scenario  # noqa: E402
from relied.env.signals import CYCLE_S, signal_plan  # noqa: E402
from relied.env.sumo import make_core  # noqa: E402
from relied.env.sumo.signals import (  # noqa: E402
    LinkSchedule,
    approach_edges,
    build_program,
    green_share,
    link_schedule,
)

CITY = "west-oakland"


@pytest.fixture(scope="module")
def net(oakland):
    return oakland


def scenario(**kw) -> Scenario:
    return Scenario(city=CITY, n_agents=kw.pop("n_agents", 60), seed=3, signals=True,
                    departure_window_s=300.0, horizon_s=1200.0, **kw)


def test_build_program_states_and_green_shares():
    a = LinkSchedule(start_s=0.0, green_s=42.0, yellow_s=3.0)
    b = LinkSchedule(start_s=45.0, green_s=42.0, yellow_s=3.0)
    phases = build_program([a, a, b, None, None], [False, True, False, False, None], 90.0)
    assert [d for d, _ in phases] == [42.0, 3.0, 42.0, 3.0]
    # link 1 is a left turn: green-yield; link 3 has no core signal: green-yield all cycle;
    # link 4 is an index no connection uses: red
    assert [s for _, s in phases] == ["Ggrgr", "yyrgr", "rrGgr", "rrygr"]
    assert [green_share(phases, i) for i in range(5)] == [42 / 90, 42 / 90, 42 / 90, 1.0, 0.0]
    # a green that wraps round the cycle end keeps its length and start
    c = LinkSchedule(start_s=80.0, green_s=20.0, yellow_s=4.0)
    wrap = build_program([c], [False], 90.0)
    assert green_share(wrap, 0) == pytest.approx(20 / 90)
    assert wrap[0] == (pytest.approx(10.0), "G") and wrap[-1] == (pytest.approx(10.0), "G")


def test_sumo_programs_give_each_link_the_core_green(net, sumo_net):
    core = make_core(net, scenario(), "sumo-meso", sumo_net=sumo_net, signal_plans="core")
    core.reset()
    try:
        tl, plan = core.traci.trafficlight, signal_plan(net)
        rep = core.program_report
        assert rep is not None and rep.programs == len(tl.getIDList()) >= 1
        assert rep.scheduled >= 1 and rep.scheduled + len(rep.uncovered) == rep.links
        approach = approach_edges(sumo_net)
        uncovered = {(t, i) for t, i, _ in rep.uncovered}
        checked = 0
        for tls in tl.getIDList():
            assert tl.getProgram(tls) == "core"
            logics = {lg.programID: lg for lg in tl.getAllProgramLogics(tls)}
            phases = [(p.duration, p.state) for p in logics["core"].phases]
            netconvert = [(p.duration, p.state) for p in logics["0"].phases]
            assert sum(d for d, _ in phases) == pytest.approx(CYCLE_S)
            for i, group in enumerate(tl.getControlledLinks(tls)):
                if not group:
                    continue
                sch, _ = link_schedule(plan, sumo_net, approach,
                                       core.traci.lane.getEdgeID(group[0][0]))
                if sch is None:  # reported, and green-yield all cycle
                    assert (tls, i) in uncovered and green_share(phases, i) == 1.0
                    continue
                e = approach[sumo_net.index[core.traci.lane.getEdgeID(group[0][0])]]
                assert green_share(phases, i) == pytest.approx(plan.green_s[e] / CYCLE_S)
                # green from the core's start (offset 0 in both), yellow right after
                t, state = 0.0, []
                for d, s in phases:
                    state.append((t, t + d, s[i]))
                    t += d
                at = (float(plan.start_s[e]) + 0.5) % CYCLE_S
                assert next(s for a, b, s in state if a <= at < b) in "Gg"
                end = (float(plan.start_s[e] + plan.green_s[e]) + 0.5) % CYCLE_S
                assert next(s for a, b, s in state if a <= end < b) == "y"
                checked += 1
            assert netconvert != phases
        assert checked == rep.scheduled
    finally:
        core.close()


@pytest.mark.parametrize("mode", ["sumo-meso", "sumo"])
def test_core_plans_change_the_sumo_run(net, sumo_net, mode):
    out = {}
    for plans in ("core", "netconvert"):
        core = make_core(net, scenario(n_agents=120), mode, sumo_net=sumo_net,
                         signal_plans=plans)
        core.reset()
        pol = make_policy("shortest-path", 0)
        while not core.done:
            core.advance(pol(core))
        out[plans] = core.metrics()
        assert (core.program_report is not None) == (plans == "core")
        core.close()
    assert out["core"]["arrival_rate"] == 1.0 and out["core"]["collisions"] == 0.0
    assert not np.isclose(out["core"]["mean_travel_time"], out["netconvert"]["mean_travel_time"])


def test_unknown_signal_plans_is_refused(net, sumo_net):
    with pytest.raises(ValueError, match="core or netconvert"):
        make_core(net, scenario(), "sumo", sumo_net=sumo_net, signal_plans="actuated")


def test_cli_simulate_sumo_signals():
    import json

    from typer.testing import CliRunner

    from relied.cli import app

    runner = CliRunner()
    args = ["simulate", "--city", CITY, "--agents", "20", "--signals", "--backend", "sumo-meso",
            "--json"]
    out = {}
    for plans in ("core", "netconvert"):
        res = runner.invoke(app, [*args, "--sumo-signals", plans])
        assert res.exit_code == 0, res.output
        out[plans] = json.loads(res.stdout)
        assert out[plans]["sumo_signals"] == plans
    assert out["core"]["core_plans_in_sumo"]["scheduled"] >= 1
    assert "core_plans_in_sumo" not in out["netconvert"]
    bad = runner.invoke(app, [*args, "--sumo-signals", "actuated"])
    assert bad.exit_code == 2 and "unknown --sumo-signals 'actuated'" in bad.stdout


def test_netconvert_programs_are_the_default(net, sumo_net):
    core = make_core(net, scenario(), "sumo", sumo_net=sumo_net)
    core.reset()
    try:
        tl = core.traci.trafficlight
        assert core.program_report is None
        assert all(tl.getProgram(t) == "0" for t in tl.getIDList())
    finally:
        core.close()


def test_meso_green_split_runs_the_core_junction_model(net, sumo_net):
    """``meso_junctions="green-split"``: no junction control, each signalised link discharged
    at its green fraction (SUMO's ``--meso-tls-flow-penalty``), so vehicles no longer wait
    for red phases and priority foes: the same demand runs faster than with junction control.
    (That the fractions follow the core's plans set through TraCI shows on loaded
    aguascalientes, benchmarks/results/backends.md; West Oakland's lights hardly queue.)"""
    out = {}
    for junctions, plans in (("control", "core"), ("green-split", "core")):
        core = make_core(net, scenario(n_agents=120), "sumo-meso", sumo_net=sumo_net,
                         signal_plans=plans, meso_junctions=junctions)
        cmd = core._command()
        assert ("--meso-junction-control" in cmd) == (junctions == "control")
        assert ("--meso-tls-flow-penalty" in cmd) == (junctions == "green-split")
        core.reset()
        pol = make_policy("shortest-path", 0)
        while not core.done:
            core.advance(pol(core))
        out[junctions, plans] = core.metrics()["mean_travel_time"]
        core.close()
    assert out["green-split", "core"] < out["control", "core"] - 1.0
    with pytest.raises(ValueError, match="control or green-split"):
        make_core(net, scenario(), "sumo-meso", sumo_net=sumo_net, meso_junctions="yield")
