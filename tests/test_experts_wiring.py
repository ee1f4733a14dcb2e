"""Bound version 5 reaches every critic judgement: training (first demos, re-generated demos,
re-checks) and ``relied experts generate`` judge under the learners and their trial update."""

import json

import numpy as np
import pytest
import torch
from bench_module import load_benchmark  # tests/ on sys.path
from typer.testing import CliRunner

from relied.cli import app
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario, index_of
from relied.experts import critic
from relied.experts.bound import BOUND_VERSION, BoundConfig
from relied.experts.critic import check_plan, recheck_batch, reference_bound
from relied.experts.demos import load_batch
from relied.experts.learners import Learners
from relied.rl.config import TrainConfig
from relied.rl.demos import expert_team_demos
from relied.rl.run_folder import read_metrics
from relied.rl.trainer import Trainer
from relied.rl.trial import fresh_learners, probs_of, run_learners

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def tiny(**kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=6, seed=1, experts="offline", train_seeds=1,
                horizon_s=300, total_steps=1000, n_envs=2, minibatch=128, expert_batch=128)
    return TrainConfig(**(base | kw))


def test_training_judges_every_plan_under_the_learners_trial_update(tmp_path, monkeypatch):
    """The first demos, the re-generated ones and every re-check are judged with the
    learners' update (the default bound version, 6, recorded in each batch); a re-check's
    terms (v5's, reported beside v6's verdict) differ from version 4's under the same
    policy."""
    team = expert_team_demos("offline", batches=1, filter_by_bound=True, progress=False)
    given: list[Learners] = []

    def provider(scenario, out_dir, learners=None, behaviour=None):
        given.append(learners)
        return team(scenario, out_dir, learners=learners, behaviour=behaviour)

    rechecked: list[Learners] = []
    real = critic.recheck_batch

    def spy(path, learners=None, **kw):
        rechecked.append(learners)
        return real(path, learners, **kw)

    monkeypatch.setattr(critic, "recheck_batch", spy)
    cfg = tiny(bound_every=1, regen_every=2)
    trainer = Trainer.create(cfg, tmp_path, provider=provider, progress=False)
    trainer.run()
    rows = read_metrics(trainer.run_dir)
    assert len(given) == 1 + len(rows) // 2 >= 2 and len(rechecked) == len(rows)
    assert all(g.trial_update is not None and g.bound_version(BoundConfig()) == BOUND_VERSION
               for g in given)
    assert given[0].digest is not None  # the seeded untrained learners: cacheable
    assert all(g.digest is None for g in given[1:])  # trained ones are not
    assert all(r.trial_update is not None and r.previous_probs is not None for r in rechecked)
    for path in trainer.run_dir.glob("demos/**/*.json"):
        extra = load_batch(path)[1].extra
        assert extra["bound"]["version"] == BOUND_VERSION
        assert "learners of run" in extra["learners"]
    # the same batch re-checked under the trained learners: v5 against v4's terms
    path = trainer.demo_paths[0][0]
    v5 = recheck_batch(path, trainer.learners(0), gamma=cfg.gamma)
    v4 = recheck_batch(path, Learners(trainer.policy_probs), gamma=cfg.gamma)
    assert not np.allclose(v5.divergence_terms, v4.divergence_terms)
    assert v5.reference_bound != pytest.approx(v4.reference_bound)


def test_recheck_of_a_congested_batch_carries_the_trial_step(tmp_path):
    """A stored batch of the congested crowd (all on the shortest path; one network per
    agent, whose greedy routes the trial step moves), re-checked as training does: under the
    learners and their trial update the bound has version 5's terms (the successor step as
    divergence, the move of the agents' cells in the external term), exactly those of
    ``check_plan`` with the trial; without the trial, version 4's."""
    from test_experts_bound import _crowd_plans  # tests/ on sys.path

    from relied.experts.critic import execute, reference_scales
    from relied.experts.demos import DemoMeta, save_batch

    net = load_city("aguascalientes")
    sc, _, _, plans = _crowd_plans(net, 16)
    routes = plans["herd"]
    cfg = BoundConfig(executions=3, return_tolerance=10.0)
    meta = DemoMeta(batch_id="herd", scenario=sc, routes=[net.osm_ids[r].tolist() for r in routes],
                    model_spec="test", source="test", accepted=True,
                    extra={"bound": cfg.model_dump(mode="json")})
    path = save_batch(tmp_path, execute(net, sc, routes=routes).decisions, meta)
    learners = fresh_learners(TrainConfig(n_agents=16, seed=0, share="none"),
                              RoutingCore(net, sc))
    v5 = recheck_batch(path, learners)
    v4 = recheck_batch(path, Learners(learners.policy_probs))
    assert v5.volatility_s > v4.volatility_s + 0.01  # Vol_ext plus the trial step's move (s)
    assert not np.allclose(v5.divergence_terms, v4.divergence_terms)
    scales, ref = reference_scales(net, sc, cfg, learners.policy_probs,
                                   trial_update=learners.trial_update)
    direct, _ = check_plan(net, sc, routes, cfg, learners.policy_probs, reference=ref,
                           scales=scales, trial_update=learners.trial_update)
    assert v5.bounds == direct.bounds and v5.accepted == direct.accepted


def test_fresh_learners_are_the_trainers_initial_learners(tmp_path):
    cfg = tiny(experts="shortest-path")
    trainer = Trainer.create(cfg, tmp_path, progress=False)
    fresh = fresh_learners(cfg, trainer.core)
    mine = trainer.learners(0)
    dec = trainer.cores[0]
    obs = dec.reset()
    mask = dec.action_mask()
    agents = np.arange(dec.n)
    np.testing.assert_array_equal(fresh.policy_probs(obs, mask, agents),
                                  mine.policy_probs(obs, mask, agents))
    assert fresh.digest == mine.digest is not None
    other = fresh_learners(cfg.model_copy(update={"seed": 2}), trainer.core)
    assert other.digest != fresh.digest
    assert not np.allclose(other.policy_probs(obs, mask, agents),
                           fresh.policy_probs(obs, mask, agents))


def test_generate_judges_under_the_learners_trial_update(tmp_path):
    """``relied experts generate`` judges with the seeded untrained learners' trial update
    (the reference bound it stores is the one measured with it, not version 4's); a rerun is
    answered from the cache (same learners), another seed's learners are asked again."""
    args = ["experts", "generate", "--agents", "20", "--json"]
    out = json.loads(runner.invoke(app, [*args, "--out", str(tmp_path / "a")]).stdout)
    assert out["bound_version"] == BOUND_VERSION
    assert out["learners"].startswith("untrained reled learners initialised with seed 0")
    _, meta = load_batch(out["saved"][0])
    assert meta.extra["bound"]["version"] == BOUND_VERSION
    sc = Scenario(city="aguascalientes", n_agents=20, seed=0)
    net = load_city(sc.city)
    learners = fresh_learners(TrainConfig(n_agents=20, seed=0), RoutingCore(net, sc))
    cfg = BoundConfig()
    with_trial = reference_bound(net, sc, cfg, learners.policy_probs,
                                 trial_update=learners.trial_update)
    without = reference_bound(net, sc, cfg)
    assert meta.extra["reference_bound"] == pytest.approx(with_trial, rel=1e-9)
    assert abs(with_trial - without) > 1e-3 * without
    # the saved plan's verdict: its bounds are those of check_plan with the trial
    routes = [index_of(net, r).tolist() for r in meta.routes]
    judged = check_plan(net, sc, routes, cfg, learners.policy_probs, reference=with_trial,
                        trial_update=learners.trial_update)[0]
    assert [meta.verdict["bounds"][str(i)] for i in range(20)] == judged.bounds
    if out["accepted"]:
        again = json.loads(runner.invoke(app, [*args, "--out", str(tmp_path / "b")]).stdout)
        assert again["cached"] == out["accepted"]


def test_generate_takes_a_runs_learners(tmp_path):
    run = Trainer.create(tiny(experts="shortest-path", total_steps=600), tmp_path / "runs",
                         progress=False)
    run.run()
    core = RoutingCore(run.net, run.scenario)
    learners = run_learners(run.run_dir, core)
    obs, mask = core.reset(), core.action_mask()
    agents = np.arange(core.n)
    np.testing.assert_allclose(learners.policy_probs(obs, mask, agents),
                               probs_of(run.model)(obs, mask, agents), rtol=1e-6)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(run.scenario.model_dump_json())
    args = ["experts", "generate", "--scenario", str(scenario), "--run", str(run.run_dir),
            "--epsilon", "2", "--json"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["learners"].startswith(f"reled learners of run {run.run_dir} at iteration")
    _, meta = load_batch(out["saved"][0])
    assert meta.extra["reference_bound"] == pytest.approx(reference_bound(
        run.net, run.scenario, BoundConfig(epsilon=2.0), learners.policy_probs,
        trial_update=learners.trial_update), rel=1e-9)
    bad = runner.invoke(app, ["experts", "generate", "--city", "west-oakland", "--agents", "7",
                              "--run", str(run.run_dir), "--json"])
    assert bad.exit_code == 2 and "trained 6 learners, the scenario has 7" in bad.stdout
    empty = runner.invoke(app, ["experts", "generate", "--scenario", str(scenario), "--run",
                                str(tmp_path), "--json"])
    assert empty.exit_code == 2 and "no readable config.json" in empty.stdout


def test_sample_efficiency_records_the_version_the_demos_were_judged_with(tmp_path):
    se = load_benchmark("sample_efficiency")
    for seed, version in ((0, BOUND_VERSION), (1, BOUND_VERSION)):
        d = tmp_path / "demos" / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "b.json").write_text(json.dumps({"accepted": True, "extra": {
            "bound": {"version": version}}}))
    batches = se.demo_batches(tmp_path)
    assert [b["bound_version"] for b in batches] == [BOUND_VERSION] * 2
    assert se.judged_version(batches) == BOUND_VERSION
    assert se.judged_version([]) == BOUND_VERSION  # no demos: the code's version
    assert se.judged_version([*batches, {"bound_version": 4}]) is None
