"""The expert team at scale: a seeded per-block sample of the learners is planned and
demonstrated, the others drive free-flow shortest paths, training keeps only the sample's rows."""

import asyncio

import numpy as np
import pytest

from relied.agents.clients import make_client
from relied.agents.generate import generate_demonstrations
from relied.agents.team import ExpertTeam, TeamConfig, demo_sample
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.critic import policy_routes, recheck_batch
from relied.experts.demos import DemoMeta, load_batch
from relied.rl.demos import decisions_of, load_expert_set

CITY = "aguascalientes"
SC = Scenario(city=CITY, n_agents=24, seed=3, min_trip_m=200)
# 24 learners, at most 8 demonstrated, planner groups of 4: 2 blocks of 12, 4 sampled each
SMALL = TeamConfig(demo_agents=8, group_size=4, bound=BoundConfig(epsilon=2.0))


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _team(config, scenario=SC, variant=0):
    net = load_city(scenario.city)
    view = CityView(net)
    core = RoutingCore(net, scenario)
    return ExpertTeam(core, view, make_client("offline", net, view), config, variant=variant)


def test_sample_takes_the_same_share_of_every_block_and_is_seeded():
    cfg = TeamConfig(demo_agents=500, group_size=50)
    blocks = demo_sample(10_000, cfg, seed=7)
    assert len(blocks) == 10 and [len(b) for b in blocks] == [50] * 10
    for k, b in enumerate(blocks):  # block k is agents 1000k .. 1000k+999
        assert b == sorted(set(b)) and 1000 * k <= b[0] and b[-1] < 1000 * (k + 1)
    assert demo_sample(10_000, cfg, seed=7) == blocks  # deterministic
    assert demo_sample(10_000, cfg, seed=8) != blocks  # another scenario seed
    assert demo_sample(10_000, cfg, seed=7, variant=1) != blocks  # another plan variant
    uneven = demo_sample(1_003, TeamConfig(demo_agents=101, group_size=25), seed=0)
    assert [len(b) for b in uneven] == [21, 20, 20, 20, 20] and sum(map(len, uneven)) == 101
    assert demo_sample(500, cfg, seed=7) == [list(range(500))]  # at the limit: everyone
    assert demo_sample(10_000, cfg.model_copy(update={"demo_agents": None}), 7) == [
        list(range(10_000))]


def test_team_plans_the_sample_and_the_others_drive_shortest_paths():
    team = _team(SMALL)
    assert team.subset and team.groups == team.blocks and [len(g) for g in team.groups] == [4, 4]
    assert all(0 <= a < 12 for a in team.groups[0]) and all(12 <= a < 24 for a in team.groups[1])
    out = asyncio.run(team.run())
    assert out.demo_agents == team.sampled and len(out.demo_agents) == 8
    assert out.model_calls == 2 * out.rounds  # one call per sampled group per round
    assert sorted(out.verdict.bounds) == team.sampled  # the critic judges the sample
    assert {p.agent_id for p in out.plan.plans} == set(team.sampled)
    net = team.core.net
    sp = policy_routes(net, team.core.scenario, "shortest-path")
    routes = [index_of(net, r).tolist() for r in out.routes]
    others = [i for i in range(SC.n_agents) if i not in set(team.sampled)]
    assert len(routes) == SC.n_agents and all(routes[i] == sp[i] for i in others)
    # the executed plan of the critic's accepted round is that joint plan
    assert team.runs[out.verdict.round][0] == routes
    assert any(routes[i] != sp[i] for i in team.sampled)  # the sample is really planned


def test_a_plan_for_an_agent_outside_the_sample_is_rejected():
    team = _team(SMALL)
    v, core = team.view, team.core
    stray = next(i for i in range(SC.n_agents) if i not in set(team.sampled))
    from relied.agents.plans import AgentPlan, JointPlan

    plans = [AgentPlan(agent_id=i, route=[str(v.osm(n)) for n in
                                          v.shortest(int(core.origin[i]), int(core.dest[i]))])
             for i in [*team.sampled, stray]]
    verdict = team.check(JointPlan(plans=plans), 1)
    assert verdict.kind == "invalid-plan" and verdict.violating_agents == [stray]
    bad = [p if p.agent_id != team.sampled[3] else p.model_copy(update={"route": p.route[::-1]})
           for p in plans[:-1]]
    verdict = team.check(JointPlan(plans=bad), 1)
    assert verdict.kind == "invalid-plan" and verdict.violating_agents == [team.sampled[3]]
    assert f"agent {team.sampled[3]}:" in verdict.reason


def test_stored_batch_trains_on_the_sampled_agents_rows_only(tmp_path):
    [path] = generate_demonstrations(SC, tmp_path / "demos", config=SMALL)
    rows, meta = load_batch(path)
    assert meta.demo_agents is not None and len(meta.demo_agents) == 8
    assert rows.returns.shape == (SC.n_agents,)  # every learner's recording is kept
    assert set(np.unique(rows.agent).tolist()) - set(meta.demo_agents)
    net = load_city(CITY)
    core = RoutingCore(net, meta.scenario)
    experts = load_expert_set([path], core, 0.99, accepted_only=False)
    assert set(np.unique(experts.dec.agent).tolist()) == set(meta.demo_agents)
    all_rows = decisions_of(rows, core.k)
    assert len(experts.dec) < len(all_rows)
    assert len(experts.dec) == int(np.isin(all_rows.agent, meta.demo_agents).sum())
    assert meta.extra["bound"]["executions"] == 2  # the scale setting, stored with the batch
    report = recheck_batch(path)  # a re-check during training judges the sample too
    judged = np.asarray(report.bounds)[meta.demo_agents]
    assert report.plan_bound == pytest.approx(np.mean(judged), abs=1e-3)  # rounded
    assert {o.agent_id for o in report.offenders} <= set(meta.demo_agents)


def test_older_batches_without_the_field_demonstrate_everyone(tmp_path):
    [path] = generate_demonstrations(SC, tmp_path / "demos",
                                     config=SMALL.model_copy(update={"demo_agents": None}))
    _, meta = load_batch(path)
    assert meta.demo_agents is None
    legacy = meta.model_dump(mode="json")
    legacy.pop("demo_agents")
    assert DemoMeta.model_validate(legacy).demo_agents is None
    core = RoutingCore(load_city(CITY), meta.scenario)
    experts = load_expert_set([path], core, 0.99, accepted_only=False)
    assert len(np.unique(experts.dec.agent)) == SC.n_agents
    with pytest.raises(ValueError, match="demo_agents"):
        DemoMeta.model_validate({**legacy, "demo_agents": [3, 1]})
    with pytest.raises(ValueError, match="demo_agents"):
        DemoMeta.model_validate({**legacy, "demo_agents": [0, SC.n_agents]})


def test_at_or_below_the_limit_the_team_plans_as_before():
    without = TeamConfig(demo_agents=None, group_size=10, bound=BoundConfig(epsilon=2.0))
    at_limit = without.model_copy(update={"demo_agents": SC.n_agents})
    a, b = _team(without), _team(at_limit)
    assert not b.subset and a.groups == b.groups and a.prompts == b.prompts
    out_a, out_b = asyncio.run(a.run()), asyncio.run(b.run())
    assert out_a.routes == out_b.routes and out_a.verdict == out_b.verdict
    assert out_b.demo_agents is None and len(out_b.verdict.bounds) == SC.n_agents


def test_at_scale_the_critic_resimulates_less():
    """Above demo_agents the critic's Vol_ext resimulations per check are capped by
    TeamConfig.scale_executions (each simulates the whole fleet); at or below it, or with the
    setting off, the bound's own settings hold."""
    assert SMALL.bound.executions == 6 and SMALL.scale_executions == 2
    assert _team(SMALL).config.bound.executions == 2
    assert _team(SMALL.model_copy(update={"scale_executions": None})).config.bound.executions == 6
    whole = _team(SMALL.model_copy(update={"demo_agents": None}))
    assert not whole.subset and whole.config.bound == SMALL.bound
