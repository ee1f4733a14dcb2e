"""Devices (auto / cpu / cuda), checkpoints that load on any device, and rollouts in
preallocated decision buffers that equal the per-step trajectories' decisions."""

import json

import numpy as np
import pytest
import torch
from test_rl_learning import hand_made  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from relied.cli import app
from relied.env.rollout import Trajectories
from relied.rl.config import TrainConfig
from relied.rl.envs import make_vector_env
from relied.rl.model import DeviceError, resolve_device
from relied.rl.policy import TrainedPolicy, load_policy, on_cpu, safe_torch_load
from relied.rl.rollout import DecisionBuffer, collect, decisions_from
from relied.rl.trainer import Trainer

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()


def tiny(**kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=6, seed=1, experts="shortest-path",
                train_seeds=1, horizon_s=300, total_steps=600, n_envs=2, minibatch=128,
                expert_batch=128, heldout_seeds=0, device="cpu")
    return TrainConfig(**(base | kw))


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="--device cuda: CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert TrainConfig().device == "auto"


def test_cuda_without_cuda_is_one_line_and_exit_2(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--city", "west-oakland", "--agents", "4", "--device",
                              "cuda", "--runs-dir", str(tmp_path), "--json"])
    assert res.exit_code == 2
    assert "CUDA is not available" in json.loads(res.stdout)["error"]
    assert not any(tmp_path.iterdir())  # no run folder was made
    res = runner.invoke(app, ["train", "--city", "west-oakland", "--device", "tpu"])
    assert res.exit_code == 2 and "--device" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path), "--device", "cuda"])
    assert res.exit_code == 2 and "CUDA is not available" in res.output


def test_checkpoint_and_policy_hold_cpu_tensors_and_load_on_cpu(tmp_path):
    trainer = Trainer.create(tiny(), tmp_path, progress=False)
    trainer.run()
    ckpt = safe_torch_load(trainer.folder.checkpoints()[-1])
    tensors = [v for part in ("model", "optim") for v in _tensors(ckpt[part])]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    resumed = Trainer.resume(trainer.run_dir, progress=False, device="cpu")
    for a, b in zip(resumed.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)
    model, config = load_policy(trainer.run_dir / "policy.pt", device="cpu")
    assert config["device"] == "cpu"
    obs = torch.rand(5, trainer.core.obs_dim)
    mask = torch.ones(5, trainer.core.k + 1, dtype=torch.bool)
    agent = torch.arange(5)
    with torch.no_grad():
        assert torch.equal(model.logits(obs, mask, agent), trainer.model.logits(obs, mask, agent))


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def test_on_cpu_copies_every_nested_tensor():
    state = {"a": torch.ones(2), "b": [torch.zeros(1), (torch.ones(1), 3)], "c": "x"}
    moved = on_cpu(state)
    assert moved["c"] == "x" and moved["b"][1][1] == 3 and isinstance(moved["b"][1], tuple)
    assert [t.tolist() for t in _tensors(moved)] == [[1.0, 1.0], [0.0], [1.0]]
    assert all(t.device.type == "cpu" and not t.requires_grad for t in _tensors(moved))


def test_decision_buffer_grows_and_sums_rewards_between_decisions():
    """The hand-made episode of test_rl_learning, fed step by step through a buffer of
    capacity 1 (it grows three times): the same rows as decisions_from."""
    traj = hand_made()
    obs, action, mask, reward = traj.obs, traj.action, traj.mask, traj.reward
    (t, n), k = reward.shape, mask.shape[2] - 1
    buf = DecisionBuffer(obs_dim=3, k=k, capacity=1)
    cum = np.zeros(n)
    for step in range(t):
        a = np.flatnonzero(mask[step, :, :k].any(axis=1))
        buf.add(obs=obs[step, a], mask=mask[step, a], action=action[step, a], agent=a,
                t=np.full(len(a), step), node=10 * a + step, cum=cum[a])
        cum += reward[step]
    dec, node = buf.decisions(cum)
    ref = decisions_from(traj, k=k)
    for field in ("obs", "mask", "action", "reward", "agent", "t", "end", "gstate"):
        assert np.array_equal(getattr(dec, field), getattr(ref, field)), field
    assert dec.reward.tolist() == [-2.0, 3.0, 3.0]
    assert node.tolist() == [0, 2, 11]  # each row's node, in (agent, time) order


def test_collect_equals_per_step_trajectories_with_one_forward_per_step():
    """collect() keeps only decision rows; they equal decisions_from over the full per-step
    arrays of the same episodes, and every step's deciding agents of all envs are chosen in
    one call."""
    cfg = tiny(n_agents=8)
    scenario = cfg.scenario(seed=3)
    k_calls = []

    def act(obs, mask, agent):  # deterministic: the last valid out-edge
        k_calls.append(len(agent))
        return mask[:, :-1].shape[1] - 1 - np.argmax(mask[:, -2::-1], axis=1)

    venv = make_vector_env(scenario, 2, "dummy")
    obs_dim, k = venv.get_env_attr("core")[0].obs_dim, venv.get_env_attr("core")[0].k
    records = collect(venv, act, obs_dim, k, {"scenario": scenario})
    # the reference: the same episodes stored step by step
    venv.reset(options={"scenario": scenario})
    obs, _ = venv.reset(options={"scenario": scenario})
    per_env = [{"obs": [], "mask": [], "action": [], "reward": []} for _ in range(2)]
    done = np.zeros(2, dtype=bool)
    steps_with_decisions = 0
    while not done.all():
        m = obs[..., obs_dim:] > 0.5
        deciding = m[:, :, :k].any(axis=2) & ~done[:, None]
        actions = np.full(deciding.shape, k)
        e, a = np.nonzero(deciding)
        if len(e):
            steps_with_decisions += 1
            actions[e, a] = act(obs[e, a, :obs_dim], m[e, a], a)
        live = np.flatnonzero(~done)
        nxt, rew, term, _, _ = venv.step(actions[live], id=live.tolist())
        for j, env in enumerate(live):
            b = per_env[env]
            b["obs"].append(obs[env, :, :obs_dim])
            b["mask"].append(m[env])
            b["action"].append(actions[env])
            b["reward"].append(rew[j])
            done[env] |= bool(term[j])
        full = np.array(obs)
        full[live] = nxt
        obs = full
    venv.close()
    assert len(k_calls) == 2 * steps_with_decisions  # collect's calls, then the reference's
    for rec, b in zip(records, per_env, strict=True):
        traj = Trajectories(np.stack(b["obs"]), np.stack(b["action"]), np.stack(b["mask"]),
                            np.stack(b["reward"]), np.zeros((len(b["obs"]), 8), dtype=bool))
        ref = decisions_from(traj, k)
        assert rec.steps == len(b["obs"]) and len(rec.dec) == len(ref) > 0
        for field in ("obs", "mask", "action", "reward", "agent", "t", "end"):
            assert np.array_equal(getattr(rec.dec, field), getattr(ref, field)), field
        assert np.array_equal(rec.returns, traj.reward.sum(axis=0))


@pytest.mark.skipif(not CUDA, reason="needs CUDA (run on a GPU machine)")
def test_cuda_training_loads_and_acts_on_cpu(tmp_path):
    trainer = Trainer.create(tiny(device="cuda"), tmp_path, progress=False)
    assert next(trainer.model.parameters()).device.type == "cuda"
    trainer.run()
    ckpt = safe_torch_load(trainer.folder.checkpoints()[-1])
    assert all(t.device.type == "cpu" for t in _tensors(ckpt["model"]))
    cpu_model, _ = load_policy(trainer.run_dir / "policy.pt", device="cpu")
    resumed = Trainer.resume(trainer.run_dir, progress=False, device="cpu")
    assert next(resumed.model.parameters()).device.type == "cpu"
    core = trainer.core
    core.reset()
    assert np.array_equal(TrainedPolicy(trainer.model)(core), TrainedPolicy(cpu_model)(core))
