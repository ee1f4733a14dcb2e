"""Tianshou at the seams: MultiAgentPolicy export, demo ReplayBuffers in HDF5, our GAE, the
decision advantages, HybridPPO, the Tianshou engine's trips and resume, and the engine against
the fast one."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from tianshou.data import Batch
from typer.testing import CliRunner

from relied.cli import app
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
from relied.experts.demos import DemoFileError
from relied.rl.config import TrainConfig
from relied.rl.demos import load_expert_set, shortest_path_demos
from relied.rl.model import ActorCritic
from relied.rl.policy import TrainedPolicy
from relied.rl.rollout import Decisions, gae
from relied.rl.run_folder import TrainError, read_metrics
from relied.rl.tianshou_engine import HybridPPO, TianshouRun, resume
from relied.rl.tianshou_policy import (
    buffer_decisions,
    load_demo_buffer,
    save_demo_buffer,
    to_multiagent_policy,
)

torch.set_num_threads(1)
SCEN = Scenario(city="west-oakland", n_agents=6, seed=0, horizon_s=300)


def loop_gae(reward, value, end, gamma, lam):
    adv, nxt_adv, nxt_v = np.zeros(len(reward)), 0.0, 0.0
    for i in reversed(range(len(reward))):
        if end[i]:
            nxt_adv, nxt_v = 0.0, 0.0
        delta = reward[i] + gamma * nxt_v - value[i]
        nxt_adv = delta + gamma * lam * nxt_adv
        adv[i], nxt_v = nxt_adv, value[i]
    return adv


def test_gae_matches_the_backward_recursion_on_ragged_chains():
    rng = np.random.default_rng(0)
    end = rng.random(500) < 0.08
    end[-1] = True
    dec = Decisions(*(np.zeros(500) for _ in range(8)))
    dec.reward, dec.end = rng.normal(size=500), end
    value = rng.normal(size=500)
    assert gae(dec, value, 0.97, 0.9) == pytest.approx(loop_gae(dec.reward, value, end, 0.97,
                                                                0.9))
    import pathlib

    import relied.rl.rollout as rollout
    assert "_gae" not in pathlib.Path(rollout.__file__).read_text()


@pytest.mark.parametrize("share", ["none", "group", "all"])
def test_multiagent_policy_acts_as_the_fast_path(oakland, share):
    torch.manual_seed(1)
    core = RoutingCore(oakland, SCEN)
    model = ActorCritic(core.obs_dim, core.k, core.n, share=share, n_groups=2)
    with torch.no_grad():  # a trained-looking policy: large, varied logits
        for p in model.parameters():
            p.mul_(4)
    policy = to_multiagent_policy(model)
    assert type(policy).__name__ == "MultiAgentPolicy" and len(policy.policies) == core.n
    actors = {id(p.actor) for p in policy.policies.values()}
    assert len(actors) == {"none": core.n, "group": 2, "all": core.n}[share]
    fast, compared, differ = TrainedPolicy(model), 0, 0
    core.reset()
    while not core.done:
        actions, mask = fast(core), core.action_mask()
        rows = np.flatnonzero(mask[:, : core.k].any(axis=1))
        if rows.size:
            obs = Batch(agent_id=np.array([f"vehicle_{i}" for i in rows]),
                        obs=core.observe()[rows], mask=mask[rows])
            act = np.asarray(policy(Batch(obs=obs, info=Batch())).act)
            assert (act == actions[rows]).all()
            assert mask[rows, act].all()  # masks honoured
            differ += int((act != mask[rows, : core.k].argmax(1)).sum())
            compared += rows.size
        core.step(actions)
    assert compared > 20 and differ > 0  # not merely the first valid slot


def test_demos_round_trip_through_a_tianshou_replay_buffer(oakland, tmp_path):
    core = RoutingCore(oakland, SCEN)
    paths = shortest_path_demos(SCEN, tmp_path / "demos")
    expert = load_expert_set(paths, core, 0.99, accepted_only=False)
    path = save_demo_buffer(expert, tmp_path / "demos.h5")
    buf = load_demo_buffer(path, core.obs_dim, core.k)
    assert type(buf).__name__ == "ReplayBuffer" and len(buf) == len(expert.dec)
    dec, ret = buffer_decisions(buf)
    for field in ("obs", "mask", "action", "reward", "agent", "t", "end"):
        assert np.array_equal(getattr(dec, field), getattr(expert.dec, field)), field
    assert ret == pytest.approx(expert.ret)
    sample, _ = buf.sample(8)  # what Tianshou's GAIL does with an expert buffer
    assert sample.obs.obs.shape == (8, core.obs_dim) and sample.obs.mask.shape[1] == core.k + 1
    with pytest.raises(DemoFileError, match="actions"):
        load_demo_buffer(path, core.obs_dim + 1, core.k)


def test_a_buffer_file_with_a_foreign_pickle_is_refused(oakland, tmp_path):
    import pickle

    core = RoutingCore(oakland, SCEN)
    expert = load_expert_set(shortest_path_demos(SCEN, tmp_path / "d"), core, 0.99, False)
    path = save_demo_buffer(expert, tmp_path / "demos.h5")
    with h5py.File(path, "a") as f:
        del f["_random_state"]
        payload = pickle.dumps(print)  # any global other than numpy's random state
        f.create_dataset("_random_state", data=np.frombuffer(payload, dtype=np.byte))
        f["_random_state"].attrs["__data_type__"] = "RandomState"
    with pytest.raises(DemoFileError, match="corrupt or unsafe"):
        load_demo_buffer(path)
    with pytest.raises(DemoFileError, match="missing"):
        load_demo_buffer(tmp_path / "nope.h5")


def small(algo: str, engine: str, steps: int, **kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=10, horizon_s=300, algo=algo,
                experts="shortest-path", share="all", total_steps=steps, n_envs=2, seed=0,
                engine=engine)
    return TrainConfig(**(base | kw))


def test_decision_returns_rebuild_each_agents_rewards(tmp_path):
    """With gamma = lambda = 1 the return of an agent's first decision is everything it earned
    from there to the end of the episode, though its rewards arrive on other agents' turns."""
    cfg = small("tianshou:ppo", "tianshou", 1, gamma=1.0, gae_lambda=1.0)
    run = TianshouRun.create(cfg, tmp_path, progress=False)
    algo, seen = run.algo, {}
    original = algo._add_returns_and_advantages

    def spy(batch, buffer, indices):
        seen["batch"] = original(batch, buffer, indices)
        return seen["batch"]

    algo._add_returns_and_advantages = spy
    run.run()
    batch = seen["batch"]
    agent = np.array([int(a.rsplit("_", 1)[1]) for a in batch.obs.agent_id])
    rew, done = np.asarray(batch.rew), np.asarray(batch.done)
    end = int(np.flatnonzero(done)[0])  # first episode: rows 0..end
    checked = 0
    for i in range(cfg.n_agents):
        rows = np.flatnonzero(agent[: end + 1] == i)
        if rows.size < 2:
            continue
        first = rows[0]
        assert batch.returns[first].item() == pytest.approx(rew[first:end + 1, i].sum(),
                                                            rel=1e-4, abs=1e-4)
        assert rew[rows[0], i] != pytest.approx(rew[first:end + 1, i].sum())
        checked += 1
    assert checked >= 3
    ep = algo.episodes[0]
    assert ep.agent_return == pytest.approx(rew[: end + 1].sum(axis=0))


def test_hybrid_ppo_adds_the_expert_term(tmp_path):
    run = TianshouRun.create(small("leed", "tianshou", 1), tmp_path, progress=False)
    summary = run.run()
    rows = (tmp_path / summary["run_dir"]).joinpath("metrics.csv").read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    row = dict(zip(header, first, strict=True))
    assert float(row["loss_expert"]) > 0 and float(row["lambda_mean"]) > 0
    assert (tmp_path / summary["run_dir"] / "demos" / "expert_buffer.h5").is_file()
    assert isinstance(run.algo, HybridPPO) and run.algo.expert_buffer is not None


@pytest.mark.parametrize("algo", ["tianshou:ppo", "tianshou:a2c"])
def test_tianshou_baselines_train_from_the_cli_and_evaluate(tmp_path, algo):
    res = CliRunner().invoke(app, ["train", "--city", "west-oakland", "--agents", "6",
                                   "--algo", algo, "--steps", "600", "--share", "all",
                                   "--runs-dir", str(tmp_path), "--no-progress", "--json",
                                   "--config", str(_cfg(tmp_path))])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["engine"] == "tianshou" and out["algo"] == algo and out["iterations"] >= 1
    cfg = json.loads((tmp_path / out["run_dir"] / "config.json").read_text())
    assert cfg["engine"] == "tianshou"
    res = CliRunner().invoke(app, ["eval", out["run_dir"], "--seeds", "1000", "--json"])
    assert res.exit_code == 0, res.output


def _cfg(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"horizon_s": 300}))
    return path


@pytest.mark.parametrize(("flags", "message"), [
    (["--algo", "mappo"], "use --engine fast for mappo"),
    (["--algo", "reled", "--bound-every", "2"], "no --regen-every/--bound-every"),
    (["--algo", "ippo", "--backend", "sumo"], "use --engine fast for --backend sumo"),
])
def test_engine_refuses_what_it_cannot_train(tmp_path, flags, message):
    res = CliRunner().invoke(app, ["train", "--city", "west-oakland", "--agents", "4",
                                   "--engine", "tianshou", "--steps", "10", *flags,
                                   "--runs-dir", str(tmp_path), "--json"])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not any(tmp_path.rglob("config.json"))
    with pytest.raises(TrainError, match="runs on the CPU"):
        TianshouRun.create(small("ippo", "tianshou", 1, device="cuda"), tmp_path)


def test_tianshou_engine_reaches_the_fast_engines_travel_time(tmp_path):
    """reled on west-oakland, same budget and seed: final greedy mean travel time within 5%."""
    from relied.rl.trainer import Trainer

    steps = 12_000
    fast = Trainer.create(small("reled", "fast", steps), tmp_path / "fast", progress=False).run()
    tian = TianshouRun.create(small("reled", "tianshou", steps), tmp_path / "ts",
                              progress=False).run()
    assert tian["arrival_rate"] == pytest.approx(fast["arrival_rate"], abs=0.1)
    assert abs(tian["mean_travel_time"] / fast["mean_travel_time"] - 1) < 0.05, (fast, tian)


class Killed(Exception):
    pass


def _stop_after(run: TianshouRun, iterations: int) -> list[list[int]]:
    """Record each iteration's episode seeds; raise :class:`Killed` (a kill) once the
    ``iterations``-th checkpoint is written."""
    seeds: list[list[int]] = []
    epoch, save = run._epoch, run.save_checkpoint

    def recorded(trainer):
        row = epoch(trainer)
        seeds.append([e.seed for e in run.algo.episodes])
        return row

    def save_then_kill():
        path = save()
        if len(seeds) == iterations:
            raise Killed
        return path

    run._epoch, run.save_checkpoint = recorded, save_then_kill
    return seeds


@pytest.mark.parametrize("train_seeds", [None, 2])
def test_each_iteration_draws_the_fast_engines_trips(tmp_path, oakland, train_seeds):
    """Fresh trips by default (iteration t: ``training_seed(t)``), else fixed scenario
    ``seed + t mod N``; every env of an iteration runs the same scenario."""
    cfg = small("reled", "tianshou", 10**6, train_seeds=train_seeds, n_agents=6)
    run = TianshouRun.create(cfg, tmp_path, progress=False)
    seeds = _stop_after(run, 3)
    with pytest.raises(Killed):
        run.run()
    expected = [cfg.training_seed(t) if train_seeds is None else cfg.seed + t % 2
                for t in range(3)]
    assert seeds == [[s] * cfg.n_envs for s in expected]
    first, second = (RoutingCore(oakland, cfg.scenario(seed=s)) for s in expected[:2])
    assert not (np.array_equal(first.origin, second.origin)
                and np.array_equal(first.dest, second.dest))
    # lambda from the agents' latest routes in the demonstrated scenario of each iteration
    rows = [r.split(",") for r in (run.run_dir / "metrics.csv").read_text().splitlines()]
    dtw = [float(r[rows[0].index("dtw_km")]) for r in rows[1:]]
    assert len(dtw) == 3 and all(np.isfinite(dtw)) and np.isfinite(run.dtw_km).sum() >= 6


def test_resume_continues_from_the_checkpoint_exactly(tmp_path):
    cfg = small("reled", "tianshou", 10**6, n_agents=6, keep_checkpoints=5, heldout_seeds=0)
    full = TianshouRun.create(cfg, tmp_path / "a", progress=False)
    _stop_after(full, 3)
    with pytest.raises(Killed):
        full.run()
    killed = tmp_path / "b"
    shutil.copytree(full.run_dir, killed)
    ckpts = sorted((killed / "checkpoints").glob("ckpt_*.pt"))
    assert len(ckpts) == 3
    ckpts[-1].unlink()  # killed after iteration 3 was logged, before its checkpoint
    resumed = resume(killed, progress=False)
    assert isinstance(resumed, TianshouRun) and resumed.counters["iteration"] == 2
    assert len((killed / "metrics.csv").read_text().splitlines()) == 3  # header + 2 rows
    seeds = _stop_after(resumed, 1)
    with pytest.raises(Killed):
        resumed.run()
    assert seeds == [[cfg.training_seed(2)] * cfg.n_envs]  # its envs start at iteration 2
    a = torch.load(full.run_dir / "checkpoints" / "ckpt_000003.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "ckpt_000003.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    a["counters"].pop("wall_s"), b["counters"].pop("wall_s")
    assert a["counters"] == b["counters"]
    assert np.array_equal(a["dtw_km"].numpy(), b["dtw_km"].numpy(), equal_nan=True)

    rows_a, rows_b = read_metrics(full.run_dir), read_metrics(killed)
    assert len(rows_a) == len(rows_b) == 3
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ra.pop("wall_s"), rb.pop("wall_s")
        assert ra.keys() == rb.keys()
        assert np.array_equal(list(ra.values()), list(rb.values()), equal_nan=True)
    with pytest.raises(TrainError, match="resume it with that engine"):
        TianshouRun.resume(_fast_run(tmp_path), progress=False)
    # the fast engine's resume refuses a Tianshou run instead of carrying on with itself
    from relied.rl.trainer import Trainer

    with pytest.raises(TrainError, match="trained with --engine tianshou"):
        Trainer.resume(killed, progress=False)


def _fast_run(tmp_path):
    from relied.rl.trainer import Trainer

    run = Trainer.create(small("ippo", "fast", 1), tmp_path / "fast", progress=False)
    run.run()
    return run.run_dir


def test_every_turn_reports_the_node_its_agent_decided_at(oakland):
    """Also on the turns of agents that decide at the same simulator step as others."""
    from relied.rl.tianshou_env import RoutingAECEnv, TripSchedule

    env = RoutingAECEnv(TripSchedule(small("ippo", "tianshou", 1, train_seeds=1)))
    env.reset()
    turns = shared = 0
    while not all(env.terminations.values()):
        agent = env.agent_selection
        i = int(agent.rsplit("_", 1)[1])
        node, others = int(env.core.decision_node()[i]), len(env._queue) > 1
        mask = env.observe(agent)["action_mask"]
        env.step(int(np.flatnonzero(mask[:-1])[turns % mask[:-1].sum()]))
        info = next(iter(env.infos.values()))
        assert info["node"] == node and info["seed"] == env.core.scenario.seed
        turns, shared = turns + 1, shared + others
    assert turns > 20 and shared > 5
