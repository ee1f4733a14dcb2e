"""``relied experts ask``/``chat`` above ``sim_vehicles``: the chat tools execute and judge the
plan on the team's fleet sample (scaled capacities), as the team did, never on the whole fleet,
and their answers say so; at or below the setting nothing changes."""

import asyncio
import json

import numpy as np
import pytest
from autogen_core import CancellationToken
from typer.testing import CliRunner

from relied.agents import tools as tools_module
from relied.agents.chat import ChatSession
from relied.agents.generate import PlanRequest
from relied.agents.team import TeamConfig
from relied.agents.tools import chat_tools
from relied.cli import app
from relied.commands import experts as experts_command
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import execute, plan_bounds
from relied.experts.learners import UNTRAINED

runner = CliRunner()
# 40 learners among 200 vehicles, 8 planned; the team simulates a sample of about 80
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120, horizon_s=600)
SAMPLED = TeamConfig(demo_agents=8, group_size=4, max_rounds=1, sim_vehicles=80,
                     bound=BoundConfig(epsilon=2.0, executions=2))


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _tool(session: ChatSession, name: str, **args) -> dict:
    tool = {t.name: t for t in chat_tools(session.state)}[name]
    return json.loads(asyncio.run(tool.run_json(args, CancellationToken())))


def test_the_chat_tools_run_on_the_teams_fleet_sample(monkeypatch):
    simulated = []
    for name in ("execute", "plan_bounds", "reference_bound"):
        real = getattr(tools_module, name)

        def spy(net, scenario, *a, _real=real, **kw):
            simulated.append((net.name, scenario.n_vehicles))
            return _real(net, scenario, *a, **kw)

        monkeypatch.setattr(tools_module, name, spy)
    session = asyncio.run(ChatSession.start(PlanRequest(scenario=SC, config=SAMPLED,
                                                        use_cache=False)))
    sample, facts = session.sample, session.state.facts
    assert sample is not None and facts.sample is sample
    vehicles = sample.scenario.n_vehicles
    assert vehicles < SC.n_vehicles and not set(session.outcome.demo_agents) - set(
        sample.info.learners)
    # the plan executed here, on the sample, as the team executed it
    routes = sample.routes([index_of(facts.core.net, r).tolist() for r in
                            session.outcome.routes])
    run = execute(sample.net, sample.scenario, routes=routes)
    travel = (run.edges_by_step >= 0).sum(0) * SC.dt_s
    whole = execute(facts.core.net, SC.resolve(facts.core.net), routes=[
        index_of(facts.core.net, r).tolist() for r in session.outcome.routes])
    assert not np.isclose(((whole.edges_by_step >= 0).sum(0) * SC.dt_s)[sample.learners].mean(),
                          travel.mean())  # (the whole fleet's figures differ)
    summary = _tool(session, "plan_summary")
    note = summary["fleet_sample"]
    assert note["simulated_vehicles"] == vehicles and note["fleet_vehicles"] == SC.n_vehicles
    assert note["simulated_learners"] == sample.learners.size
    assert note["capacity_factor"] == pytest.approx(sample.info.factor, abs=1e-4)
    assert summary["agents"] == SC.n_agents
    assert summary["mean_travel_time"] == pytest.approx(travel.mean(), rel=1e-12)
    slow = _tool(session, "slowest_agents", k=3)
    order = np.argsort(-travel, kind="stable")[:3]
    assert [a["agent"] for a in slow["agents"]] == sample.learners[order].tolist()
    assert [a["travel_time_s"] for a in slow["agents"]] == travel[order].tolist()
    planned = session.outcome.demo_agents[0]
    outside = int(np.setdiff1d(np.arange(SC.n_agents), sample.learners)[0])
    at = sample.positions([planned])[0]
    route = _tool(session, "route_of_agent", agent_id=planned)
    assert route["simulated"] and route["travel_time_s"] == travel[at]
    route = _tool(session, "route_of_agent", agent_id=outside)
    assert not route["simulated"] and route["travel_time_s"] is None
    bound = _tool(session, "agent_bound", agent_id=planned)
    terms = plan_bounds(sample.net, sample.scenario, routes, SAMPLED.bound, run=run,
                        agents=sample.positions(session.outcome.demo_agents))
    assert bound["bound"] == round(float(terms.bound[at]), 1)
    assert bound["external_term"] == round(float(terms.external[at]), 1)
    assert bound["fleet_sample"] == note
    assert "fleet sample" in _tool(session, "agent_bound", agent_id=outside)["error"]
    # every simulation of the tools ran on the sample (never the 200-vehicle fleet)
    assert simulated and set(simulated) == {(sample.net.name, vehicles)}
    answer = asyncio.run(session.answer("which are the slowest agents?"))
    assert f"fleet sample of {vehicles:,} of {SC.n_vehicles:,} vehicles" in answer


def test_at_or_below_the_setting_the_chat_runs_on_the_whole_fleet():
    config = SAMPLED.model_copy(update={"sim_vehicles": SC.n_vehicles})
    session = asyncio.run(ChatSession.start(PlanRequest(scenario=SC, config=config,
                                                        use_cache=False)))
    assert session.sample is None and session.state.facts.sample is None
    summary = _tool(session, "plan_summary")
    assert "fleet_sample" not in summary
    facts = session.state.facts
    run = execute(facts.core.net, facts.core.scenario, routes=facts.nodes)
    travel = (run.edges_by_step >= 0).sum(0) * SC.dt_s
    assert summary["mean_travel_time"] == pytest.approx(travel.mean(), rel=1e-12)
    assert "simulated" not in _tool(session, "route_of_agent", agent_id=0)


def test_ask_says_it_answered_on_a_fleet_sample(tmp_path, monkeypatch):
    # (the untrained learners without an update: the learners' lookahead on a sample is
    # tests/test_expert_scale_v6.py's)
    monkeypatch.setattr(experts_command, "_learners", lambda *_: UNTRAINED)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(SC.model_dump_json())
    res = runner.invoke(app, ["experts", "ask", "which are the slowest agents?", "--scenario",
                              str(scenario), "--sim-vehicles", "80", "--max-rounds", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    note = out["fleet_sample"]
    assert note["fleet_vehicles"] == SC.n_vehicles and 0 < note["simulated_vehicles"] <= 100
    assert f"fleet sample of {note['simulated_vehicles']:,} of 200 vehicles" in out["answer"]
