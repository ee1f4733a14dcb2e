"""Bound version 6 (the lookahead) on a fleet sample (TeamConfig.sim_vehicles): the learners'
next update is rolled out on the sample's scaled network under the fleet's agent ids, the
verdict is the sample's, mapped back to fleet ids; training's re-check of such a batch runs on
the same sample."""

import asyncio

import numpy as np
import pytest
import torch
from test_experts_bound_v6 import hybrid_successor  # tests/ on sys.path

from relied.agents.clients import make_client
from relied.agents.generate import generate_demonstrations
from relied.agents.team import ExpertTeam, TeamConfig, free_flow_routes
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.sample import FleetSample, sample_fleet
from relied.env.scenario import Scenario, index_of
from relied.experts import critic
from relied.experts.bound import LOOKAHEAD_VERSION, BoundConfig
from relied.experts.critic import check_plan, execute, plan_bounds, successor_move
from relied.experts.demos import load_batch
from relied.experts.learners import Learners
from relied.rl import trial as trial_module
from relied.rl.config import TrainConfig
from relied.rl.demos import decisions_of, demonstrated
from relied.rl.envs import make_vector_env
from relied.rl.model import ActorCritic
from relied.rl.rollout import Decisions, collect
from relied.rl.trial import lookahead_seed, probs_of, trial_update

# 40 learners among 200 vehicles, 8 planned; the team simulates a sample of about 80
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120, horizon_s=600)
V6 = BoundConfig(epsilon=2.0, executions=2, version=LOOKAHEAD_VERSION)
SAMPLED = TeamConfig(demo_agents=8, group_size=4, bound=V6, sim_vehicles=80, max_rounds=1)
KEEP = [2, 9, 17, 30]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def learners():
    """Untrained per-agent learners (share none: every agent its own policy, so an agent id
    mapped wrongly changes the answer) training in the scenario's own environment."""
    net = load_city(SC.city)
    core = RoutingCore(net, SC)
    torch.manual_seed(0)
    model = ActorCritic(core.obs_dim, core.k, core.n)
    cfg = TrainConfig(city=SC.city, n_agents=SC.n_agents, algo="reled", background_share=0.8,
                      departure_window_s=120, horizon_s=600, seed=SC.seed, n_envs=1)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    update = trial_update(model, optim, cfg, lambda: np.ones(core.n))
    return net, model, update, Learners(policy_probs=probs_of(model), trial_update=update,
                                        source="test learners")


def _on(fn, fleet):
    return lambda obs, mask, agent: fn(obs, mask, fleet[np.asarray(agent)])


def _next_policy_on_sample(model, update, sample, rows, agents, seed, net):
    """The learners' whole next update computed here from its parts, for a run on ``sample``:
    a rollout of the current policy on ``net`` (the sample's scaled copy) in the learners'
    environment at the sample's size, learner k acting as fleet learner sample.learners[k];
    then PPO + the expert loss on the plan's rows under fleet ids; asked at sample
    positions."""
    cfg, fleet = update.cfg, sample.learners
    gen = torch.Generator().manual_seed(lookahead_seed(seed))

    def act(obs, mask, agent):
        with torch.no_grad():
            p = torch.softmax(model.logits(torch.as_tensor(obs, dtype=torch.float32),
                                           torch.as_tensor(mask),
                                           torch.as_tensor(fleet[agent], dtype=torch.long)), 1)
        return torch.multinomial(p, 1, generator=gen)[:, 0].numpy()

    rollout = cfg.scenario(seed=sample.scenario.seed, city=SC.city,
                           n_agents=sample.scenario.n_agents).model_copy(update={
                               k: getattr(sample.scenario, k)
                               for k in ("origins", "destinations", "departures_s",
                                         "stuck_time_s")})
    venv = make_vector_env(rollout, cfg.n_envs, "dummy", decisions_only=True, net=net)
    records = collect(venv, act, model.obs_dim, model.k)
    venv.close()
    dec = Decisions.concat([r.dec for r in records])
    dec.agent = fleet[dec.agent]
    returns = np.zeros(SC.n_agents)
    returns[fleet] = rows.returns
    fleet_rows = type(rows)(rows.step, fleet[rows.agent], rows.obs, rows.mask, rows.action,
                            rows.cum, returns, rows.steps)
    expert = demonstrated(decisions_of(fleet_rows, model.k), fleet[agents].tolist())
    return _on(probs_of(hybrid_successor(model, update, gen, dec, expert)), fleet)


def test_the_lookahead_on_a_sample_is_the_next_update_rolled_out_on_the_sample(learners):
    """The forecast drift of a plan judged on a fleet sample equals successor_move with the
    whole next update computed here on the sample (rollout on the scaled network, agents
    under their fleet ids). Rolled out on the unscaled network, or with the sample's
    positions taken for agent ids, the forecast differs: this test fails without either."""
    net, model, update, lr = learners
    sample = sample_fleet(net, SC, 80, keep=KEEP, seed=1)
    assert sample is not None and sample.info.factor < 0.5
    sim = lr.on_sample(sample, SC.n_agents)
    agents = sample.positions(KEEP)
    routes = sample.routes(free_flow_routes(net, SC)[0])
    run = execute(sample.net, sample.scenario, routes=routes)
    terms = plan_bounds(sample.net, sample.scenario, routes, V6, sim.policy_probs, run=run,
                        agents=agents, trial_update=sim.trial_update)
    current = _on(probs_of(model), sample.learners)
    whole = _next_policy_on_sample(model, update, sample, run.decisions, np.asarray(agents),
                                   V6.seed, sample.net)
    mine = successor_move(sample.net, sample.scenario, run, current, whole)
    assert terms.lookahead.shape == (sample.scenario.n_agents,) and mine[agents].max() > 0
    np.testing.assert_allclose(terms.lookahead, mine, rtol=1e-9, atol=1e-12)
    unscaled = _next_policy_on_sample(model, update, sample, run.decisions,
                                      np.asarray(agents), V6.seed, net)
    assert not np.allclose(successor_move(sample.net, sample.scenario, run, current, unscaled),
                           mine)
    positions = FleetSample(sample.net, sample.scenario, sample.info.model_copy(
        update={"learners": list(range(sample.scenario.n_agents))}))
    unmapped = _next_policy_on_sample(model, update, positions, run.decisions,
                                      np.asarray(agents), V6.seed, sample.net)
    assert not np.allclose(successor_move(sample.net, sample.scenario, run,
                                          probs_of(model), unmapped), mine)


def test_the_lookahead_on_a_sample_rolls_out_with_the_samples_stuck_time(learners):
    """The sample scales its stuck time with its network (relied.env.sample); the
    lookahead's rollout on the sample keeps it, on the whole fleet it keeps the learners'."""
    net, _, update, _ = learners
    sample = sample_fleet(net, SC, 80, keep=KEEP, seed=1)
    assert sample.info.stuck_time_scaled
    assert sample.scenario.stuck_time_s == pytest.approx(SC.stuck_time_s / sample.info.factor)
    on_sample = update.rollout_scenario(sample.scenario, sample)
    assert on_sample.stuck_time_s == sample.scenario.stuck_time_s
    assert update.rollout_scenario(sample.scenario).stuck_time_s == SC.stuck_time_s


def test_a_v6_team_judges_on_the_sample_and_maps_its_verdict_back(learners, monkeypatch):
    """Above sim_vehicles a v6 team runs (it was refused before): every lookahead rollout runs
    on the sample's scaled network at the sample's size, and the verdict is the lookahead's on
    the sample (the same report as check_plan there), offenders under fleet ids."""
    net, _, _, lr = learners
    rolled = []
    real = make_vector_env

    def spy(scenario, *a, **kw):
        rolled.append((kw.get("net").name if kw.get("net") is not None else scenario.city,
                       scenario.n_agents))
        return real(scenario, *a, **kw)

    monkeypatch.setattr(trial_module, "make_vector_env", spy)
    view = CityView(net)
    team = ExpertTeam(RoutingCore(net, SC), view, make_client("offline", net, view), SAMPLED,
                      lr)
    assert team.sample is not None
    out = asyncio.run(team.run())
    sample = team.sample
    assert rolled and set(rolled) == {(sample.net.name, sample.scenario.n_agents)}
    assert out.demo_agents == team.sampled and set(out.verdict.bounds) == set(team.sampled)
    assert "forecast" in out.verdict.reason
    routes = [index_of(net, r).tolist() for r in out.routes]
    report, _ = check_plan(sample.net, sample.scenario, sample.routes(routes), team.config.bound,
                           team.sim_learners.policy_probs, team._simulated_groups(),
                           team.baseline, reference=team.reference,
                           agents=sample.positions(team.sampled),
                           trial_update=team.sim_learners.trial_update)
    assert report.lookahead and report.lookahead_drift_s > 0
    assert out.verdict.reason == report.reason and out.verdict.accepted == report.accepted
    assert out.verdict.violating_agents == [int(sample.learners[o.agent_id])
                                            for o in report.offenders]
    assert set(out.verdict.violating_agents) <= set(team.sampled)


def test_a_recheck_of_a_v6_batch_made_on_a_sample_runs_the_lookahead_there(tmp_path,
                                                                           learners):
    """Training's re-check of a v6 batch made on a fleet sample: the lookahead's verdict on
    that sample, equal to check_plan's there under the learners seen from the sample."""
    net, _, _, lr = learners
    [path] = generate_demonstrations(SC, tmp_path / "demos", config=SAMPLED, learners=lr,
                                     use_cache=False)
    _, meta = load_batch(path)
    assert meta.fleet_sample is not None and meta.extra["bound"]["version"] == 6
    report = critic.recheck_batch(path, lr, net=net)
    assert report.lookahead and report.lookahead_drift_s > 0
    sample = FleetSample.of(net, meta.scenario, meta.fleet_sample)
    sim = lr.on_sample(sample, SC.n_agents)
    config = BoundConfig.from_stored(meta.extra["bound"])
    agents = sample.positions(meta.demo_agents)
    base = critic.shortest_path_run(sample.net, sample.scenario)
    scales, reference = critic.reference_scales(sample.net, sample.scenario, config,
                                                sim.policy_probs, agents=agents,
                                                trial_update=sim.trial_update, run=base)
    routes = sample.routes([index_of(net, r).tolist() for r in meta.routes])
    direct = check_plan(sample.net, sample.scenario, routes, config, sim.policy_probs,
                        baseline_return=float(base.returns.mean()), reference=reference,
                        scales=scales, agents=agents, trial_update=sim.trial_update)[0]
    assert report.lookahead_drift_s == direct.lookahead_drift_s
    assert report.reference_lookahead_drift_s == direct.reference_lookahead_drift_s
    assert report.accepted == direct.accepted and report.bounds == direct.bounds
    assert {o.agent_id for o in report.offenders} <= set(meta.demo_agents)  # fleet ids
