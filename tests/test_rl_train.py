"""Training runs on a tiny scenario: improvement, exact resume, bad input."""

import shutil

import numpy as np
import pytest
import torch

from relied.env.rollout import run_episode
from relied.experts.demos import DemoFileError
from relied.rl.config import TrainConfig
from relied.rl.demos import DemoError, shortest_path_demos
from relied.rl.envs import make_vector_env
from relied.rl.policy import PolicyFileError, TrainedPolicy, load_policy
from relied.rl.run_folder import TrainError, read_metrics
from relied.rl.trainer import Trainer

torch.set_num_threads(1)


def tiny(**kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=6, seed=1, experts="shortest-path",
                train_seeds=1, horizon_s=300, total_steps=1500, n_envs=2, minibatch=128,
                expert_batch=128)
    return TrainConfig(**(base | kw))


def test_short_reled_run_improves_over_initial_policy(tmp_path):
    trainer = Trainer.create(tiny(total_steps=8000), tmp_path, progress=False)
    initial = run_episode(trainer.core, TrainedPolicy(trainer.model)).metrics
    summary = trainer.run()
    assert summary["env_steps"] >= 8000
    # from trips cut off at the horizon to arriving in about two minutes
    assert summary["final_return"] > initial["mean_return"] + 3.0
    assert summary["arrival_rate"] == 1.0 > initial["arrival_rate"]
    rows = read_metrics(trainer.run_dir)
    assert rows[-1]["return"] > rows[0]["return"]
    assert 0 < rows[0]["lambda_mean"] <= 1.0 and rows[0]["dtw_km"] > rows[-1]["dtw_km"]
    for name in ("config.json", "metrics.csv", "policy.pt", "summary.json",
                 "learning_curve.png", "routes.png"):
        assert (trainer.run_dir / name).is_file(), name
    assert any((trainer.run_dir / "tb").iterdir())
    stored = TrainConfig.load(trainer.run_dir / "config.json")
    assert stored == trainer.cfg and len(stored.city_sha256) == 64
    assert stored.model_copy(update={"city_sha256": None}) == tiny(total_steps=8000)


def test_resume_after_a_kill_restores_identical_state(tmp_path):
    cfg = tiny(total_steps=2000, keep_checkpoints=3)
    full = Trainer.create(cfg, tmp_path / "a", progress=False)
    full.run()
    ckpts = full.folder.checkpoints()
    assert len(ckpts) >= 2
    killed = tmp_path / "b"
    shutil.copytree(full.run_dir, killed)
    # simulate a kill after iteration n-1 was logged but before its checkpoint was kept:
    (killed / "checkpoints" / ckpts[-1].name).unlink()
    for name in ("policy.pt", "summary.json"):
        (killed / name).unlink()
    resumed = Trainer.resume(killed, progress=False)
    assert resumed.counters["iteration"] == int(ckpts[-2].stem.split("_")[1])
    assert len(read_metrics(killed)) == resumed.counters["iteration"]
    resumed.run()
    a, _ = load_policy(full.run_dir / "policy.pt")
    b, _ = load_policy(killed / "policy.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    rows_a, rows_b = read_metrics(full.run_dir), read_metrics(killed)
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ra.pop("wall_s"), rb.pop("wall_s")
        assert ra.keys() == rb.keys()
        assert np.allclose(list(ra.values()), list(rb.values()), equal_nan=True, rtol=0, atol=0)
    assert resumed.counters["env_steps"] == full.counters["env_steps"]


def test_corrupt_checkpoint_and_missing_run_give_clear_errors(tmp_path):
    trainer = Trainer.create(tiny(total_steps=10, algo="ippo"), tmp_path, progress=False)
    trainer.run()
    trainer.folder.checkpoints()[-1].write_bytes(b"not a checkpoint")
    with pytest.raises(PolicyFileError, match="checkpoint .* is corrupt"):
        Trainer.resume(trainer.run_dir, progress=False)
    (trainer.run_dir / "policy.pt").write_bytes(b"\x00garbage")
    with pytest.raises(PolicyFileError, match="policy file .* is corrupt"):
        load_policy(trainer.run_dir / "policy.pt")
    with pytest.raises(TrainError, match="not a run folder"):
        Trainer.resume(tmp_path / "missing", progress=False)


def test_demos_of_another_scenario_or_corrupt_are_rejected(tmp_path):
    other = tiny(seed=5).scenario()
    store = tmp_path / "store"
    paths = shortest_path_demos(other, store)
    trainer = Trainer.create(tiny(demos_dir=str(store)), tmp_path / "runs", progress=False)
    with pytest.raises(DemoError, match="another scenario"):
        trainer.load_demos()
    paths[0].with_suffix(".npz").write_bytes(b"broken")
    with pytest.raises(DemoFileError, match="corrupt"):
        trainer.load_demos()


@pytest.mark.parametrize("overrides", [
    dict(algo="mappo", share="all"),
    dict(algo="leed", expert_loss="ppo", share="group", n_groups=2),
    dict(algo="bc"),
    dict(algo="reled", weight="return", vector="subproc"),
])
def test_every_algorithm_runs_an_iteration(tmp_path, overrides):
    summary = Trainer.create(tiny(total_steps=10, **overrides), tmp_path, progress=False).run()
    assert summary["iterations"] == 1 and summary["env_steps"] > 0
    assert summary["algo"] == overrides["algo"]


def test_training_cycles_over_several_od_scenarios(tmp_path):
    from relied.rl.envs import BatchRoutingEnv

    env = BatchRoutingEnv(tiny().scenario())
    first, _ = env.reset()
    other = tiny(seed=2).scenario()
    switched, _ = env.reset(options={"scenario": other})
    assert env.core.scenario.seed == 2 and not np.array_equal(first, switched)
    trainer = Trainer.create(tiny(train_seeds=2, total_steps=721), tmp_path, progress=False)
    summary = trainer.run()
    assert summary["iterations"] >= 2
    assert [len(list((trainer.run_dir / "demos" / f"seed-{s}").glob("*.json")))
            for s in (1, 2)] == [1, 1]
    assert len(trainer.expert_tensors.action) == sum(len(e.dec) for e in trainer.experts)
    assert trainer.experts[0].routes_km[0].tolist() != trainer.experts[1].routes_km[0].tolist()


def test_bound_recheck_and_demo_regeneration_use_the_learners(tmp_path):
    from relied.rl.demos import expert_team_demos

    team = expert_team_demos("offline", batches=1, filter_by_bound=True, progress=False)
    calls = []

    def provider(scenario, out_dir, learners=None, behaviour=None):
        calls.append((out_dir, learners, behaviour))
        return team(scenario, out_dir, learners=learners, behaviour=behaviour)

    cfg = tiny(experts="offline", total_steps=1000, bound_every=1, regen_every=2)
    trainer = Trainer.create(cfg, tmp_path, provider=provider, progress=False)
    trainer.run()
    rows = read_metrics(trainer.run_dir)
    first, regens = calls[0], calls[1:]
    assert first[1].trial_update is not None and first[2] is None  # the untrained learners
    assert len(regens) == len(rows) // 2 >= 1
    obs, mask, agent = (trainer.experts[0].dec.obs[:5], trainer.experts[0].dec.mask[:5],
                        trainer.experts[0].dec.agent[:5])
    for out_dir, learners, behaviour in regens:
        assert out_dir.name.startswith("iter-") and any(out_dir.glob("*.json"))
        # the learners' policy as it is now (the same model), and its trial update
        np.testing.assert_array_equal(learners.policy_probs(obs, mask, agent),
                                      trainer.policy_probs(obs, mask, agent))
        assert learners.trial_update is not None
        assert sorted(behaviour) == list(range(6))
        assert all(route and route[0] == o for route, o in
                   zip(behaviour.values(), trainer.scenario.origins, strict=True))
    assert all(r["bound_max"] > 0 for r in rows)
    assert [r["demos_regenerated"] == 1.0 for r in rows] == \
        [(i + 1) % 2 == 0 for i in range(len(rows))]
    regen = [r for r in rows if r["demos_regenerated"] == 1.0]
    assert all(r["model_calls"] >= 1 and r["model_prompt_tokens"] > 0 and r["model_wall_s"] > 0
               for r in regen)  # the expert team's usage, logged when it was asked again
    # the bound moves with the policies: uniform at the start, trained policies later
    probs = trainer.policy_probs(trainer.experts[0].dec.obs[:5], trainer.experts[0].dec.mask[:5],
                                 trainer.experts[0].dec.agent[:5])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert len({round(r["bound_max"], 6) for r in rows}) > 1


def test_lambda_weights_each_demonstration_by_its_scenario_and_agent(tmp_path):
    """lambda(scenario j, agent i) comes from agent i's route in scenario j; each expert row
    is weighted by its own (j, i). Fails if lambda is averaged or indexed across scenarios."""
    from relied.rl.hybrid_ppo import ExpertTerm

    trainer = Trainer.create(tiny(train_seeds=2, value_filter=False, lambda_min=0.0),
                             tmp_path, progress=False)
    trainer.load_demos()
    n = trainer.core.n
    trainer.dtw_km = np.array([np.linspace(0.01, 0.6, n), np.linspace(0.6, 0.01, n)])
    lam = trainer._expert_weights()
    assert lam.shape == (2, n)
    assert not torch.allclose(lam[0], lam[1])  # same agent, other scenario: other weight
    expert = trainer.expert_tensors
    assert set(expert.scenario.tolist()) == {0, 1}
    term = ExpertTerm.prepare(trainer.model, trainer.cfg, expert, trainer.expert_ret, lam)
    np.testing.assert_allclose(term.weight, lam[expert.scenario, expert.agent])
    assert not np.allclose(term.weight, lam.mean())
    assert not np.allclose(term.weight, lam[1 - expert.scenario, expert.agent])
    # an iteration on scenario 0 measures routes there and leaves scenario 1's untouched
    venv = make_vector_env(trainer.scenario, 2, "dummy")
    before = trainer.dtw_km[1].copy()
    trainer.iterate(venv)
    venv.close()
    assert np.array_equal(trainer.dtw_km[1], before)
    assert not np.allclose(trainer.dtw_km[0], np.linspace(0.01, 0.6, n))


def test_fresh_trips_every_iteration_apart_from_demonstrated_and_held_out(tmp_path):
    cfg = tiny(train_seeds=None, total_steps=1200, heldout_seeds=2)
    assert cfg.fresh_trips
    seeds = {cfg.training_seed(t) for t in range(50)}
    assert len(seeds) == 50 and not seeds & set(cfg.pool_seeds()) and not seeds & set(
        cfg.heldout())
    trainer = Trainer.create(cfg, tmp_path, progress=False)
    summary = trainer.run()
    assert summary["trips"] == "fresh" and summary["heldout_seeds"] == [1001, 1002]
    for key in ("heldout_mean_travel_time", "heldout_arrival_rate",
                "heldout_shortest_path_travel_time"):
        assert summary[key] is not None
    assert len(trainer.cores) == cfg.demo_scenarios  # demonstrated scenarios, probed for lambda
    assert np.isfinite(trainer.dtw_km).any()


def test_default_training_generalises_to_held_out_trips_on_west_oakland(tmp_path):
    """Issue 14: defaults (fresh trips, shared policy) on the smallest city reach every
    destination of held-out trips, within 10% of free-flow shortest path."""
    cfg = TrainConfig(city="west-oakland", n_agents=10, seed=2, experts="shortest-path")
    summary = Trainer.create(cfg, tmp_path, progress=False).run()
    assert summary["heldout_arrival_rate"] >= 0.99
    assert summary["heldout_mean_travel_time"] <= 1.10 * summary[
        "heldout_shortest_path_travel_time"]


def test_fast_rollout_builds_the_deciding_agents_observations_only(tmp_path, monkeypatch):
    """The fast engine's envs observe only the agents whose mask offers an out-edge (the rows
    ``collect`` stores); the full observation is built once per episode, at reset."""
    from relied.env.core import RoutingCore
    from relied.rl.envs import BatchRoutingEnv

    made: list[RoutingCore] = []
    make_core = BatchRoutingEnv._core
    monkeypatch.setattr(BatchRoutingEnv, "_core",
                        lambda self, s: made.append(make_core(self, s)) or made[-1])
    built = {"full": 0, "rows": 0, "calls": 0}
    observe = RoutingCore.observe

    def counting(core, rows=None):
        if any(core is c for c in made):
            if rows is None:
                built["full"] += 1
            else:
                deciding = np.flatnonzero(core.action_mask()[:, : core.k].any(axis=1))
                assert np.array_equal(rows, deciding)
                built["rows"] += len(rows)
                built["calls"] += 1
        return observe(core, rows)

    monkeypatch.setattr(RoutingCore, "observe", counting)
    summary = Trainer.create(tiny(n_agents=20, total_steps=10), tmp_path, progress=False).run()
    assert summary["iterations"] == 1
    episodes = 2  # one per env
    assert built["full"] == episodes  # the resets
    assert built["calls"] == summary["env_steps"]
    assert 0 < built["rows"] < 0.2 * 20 * summary["env_steps"]
