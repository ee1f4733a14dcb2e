"""The AutoGen team for real: offline planner -> critic -> accept, revisions, round limits."""

import asyncio

import numpy as np
from autogen_ext.models.replay import ReplayChatCompletionClient

from relied.agents.clients import GuardedClient, make_client
from relied.agents.offline import OFFLINE_INFO
from relied.agents.plans import AgentPlan, JointPlan
from relied.agents.team import ExpertTeam, TeamConfig
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig


def _team(city, n, seed=0, client=None, config=None):
    net = load_city(city)
    view = CityView(net)
    core = RoutingCore(net, Scenario(city=city, n_agents=n, seed=seed, min_trip_m=200))
    client = client or make_client("offline", net, view)
    return ExpertTeam(core, view, client, config), None


def _good_plan(team) -> JointPlan:
    v, core = team.view, team.core
    return JointPlan(plans=[
        AgentPlan(agent_id=i, route=[str(v.osm(n)) for n in v.shortest(int(o), int(d))])
        for i, (o, d) in enumerate(zip(core.origin, core.dest, strict=True))])


def test_offline_team_plans_and_the_critic_accepts():
    team, prompt = _team("aguascalientes", 20, config=TeamConfig(bound=BoundConfig(epsilon=2.0)))
    out = asyncio.run(team.run())
    assert out.verdict.accepted and out.accepted_round == 1 and out.rounds == 1
    assert out.model_calls == 1 and out.model_spec == "offline"
    assert len(out.routes) == 20 and all(len(r) >= 2 for r in out.routes)
    assert [m["source"] for m in out.transcript] == ["user", "planner_0", "critic"]
    assert out.termination.startswith("Functional termination")
    assert np.mean(list(out.verdict.bounds.values())) < out.verdict.epsilon  # the plan's mean
    assert out.accepted and not out.fallback and out.reference_bound > 0


def test_team_is_deterministic():
    a = asyncio.run(_team("aguascalientes", 30, seed=2)[0].run())
    team, prompt = _team("aguascalientes", 30, seed=2)
    b = asyncio.run(team.run())
    assert a.routes == b.routes and a.verdict == b.verdict


def test_one_planner_per_group_for_large_scenarios():
    team, prompt = _team("aguascalientes", 60, config=TeamConfig(group_size=25))
    out = asyncio.run(team.run())
    k = len(team.groups)
    assert k >= 3 and max(map(len, team.groups)) <= 25 and out.groups == k
    assert out.model_calls == k * out.rounds
    assert [m["source"] for m in out.transcript[:k + 2]] == [
        "user", *(f"planner_{j}" for j in range(k)), "critic"]
    assert sorted(p.agent_id for p in out.plan.plans) == list(range(60))


def test_invalid_plan_is_fed_back_and_revised():
    probe, _ = _team("west-oakland", 3)
    good = _good_plan(probe)
    broken = JointPlan(plans=good.plans[:2])  # agent 2 missing
    replay = ReplayChatCompletionClient([broken.model_dump_json(), good.model_dump_json()],
                                        model_info=OFFLINE_INFO)
    team, prompt = _team("west-oakland", 3, client=GuardedClient(replay, "replay"))
    out = asyncio.run(team.run())
    first, last = out.verdicts
    assert first.kind == "invalid-plan" and first.violating_agents == [2]
    assert "have no plan" in first.reason
    assert last.accepted and out.accepted_round == 2 and out.model_calls == 2
    # the planner saw the critic's reason in its second call
    seen = [m.content for m in replay.create_calls[1]["messages"] if isinstance(m.content, str)]
    assert any("have no plan" in text for text in seen)


def test_round_limit_ends_with_the_last_rejected_plan():
    config = TeamConfig(max_rounds=2, bound=BoundConfig(epsilon=1e-6))  # nothing can pass
    team, prompt = _team("aguascalientes", 20, config=config)
    out = asyncio.run(team.run())
    assert not out.verdict.accepted and out.accepted_round is None
    assert out.rounds == 2 and out.model_calls == 2
    # no plan passed: the outcome is the lower-bound plan of the two (plans slower than the
    # shortest-path baseline last), marked as a fallback
    assert out.fallback and not out.accepted and len(out.routes) == 20
    q = {v.round: (v.too_slow, np.quantile(list(v.bounds.values()), 0.9)) for v in out.verdicts}
    assert out.verdict.round == min(q, key=q.get)
    assert "Maximum number of messages" in out.termination
    assert out.verdicts[0].violating_agents and out.verdicts[0].shared_edges
    # the offline planner moved the named agents: its second plan differs
    assert out.verdicts[0].bounds != out.verdicts[1].bounds
    assert "moved off edges named by the critic" in " ".join(
        m["content"] for m in out.transcript if m["source"] == "planner_0")


def test_critic_objection_moves_named_agents_and_lowers_their_bound():
    config = TeamConfig(max_rounds=2, bound=BoundConfig(epsilon=0.8))
    team, prompt = _team("aguascalientes", 100, seed=0, config=config)
    out = asyncio.run(team.run())
    first = out.verdicts[0]
    assert not first.accepted and first.kind == "stationarity"
    named = first.violating_agents
    after = out.verdicts[1].bounds
    assert sum(after[a] for a in named) < sum(first.bounds[a] for a in named)
