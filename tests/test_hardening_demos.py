"""Demonstration batches are validated on load, naming the file and field (issue 10, item 4)."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from relied.experts.demos import DENSE_FIELDS, DemoFileError, DemoMeta, list_batches, load_batch
from relied.rl.config import TrainConfig
from relied.rl.demos import shortest_path_demos
from relied.rl.trainer import Trainer


def tiny(**kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=4, seed=1, experts="shortest-path", horizon_s=300,
                total_steps=10, n_envs=1, minibatch=64, expert_batch=64)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    store = tmp_path_factory.mktemp("pristine")
    (path,) = shortest_path_demos(tiny().scenario(), store)
    return path


@pytest.fixture
def batch(pristine, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(pristine.parent, store)
    return store / pristine.name


def as_format_1(path):
    """Store the batch as format 1 did: the episode's dense arrays, no ``format`` field."""
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.env.policies import ShortestPathPolicy
    from relied.env.rollout import run_episode

    meta = DemoMeta.model_validate_json(path.read_text())
    core = RoutingCore(load_city(meta.scenario.city), meta.scenario)
    traj = run_episode(core, ShortestPathPolicy(), record=True).trajectories
    npz = path.with_suffix(".npz")
    with open(npz, "wb") as f:
        np.savez_compressed(f, **{k: getattr(traj, k) for k in DENSE_FIELDS})
    raw = json.loads(meta.model_dump_json())
    raw.pop("format")
    raw["arrays_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    path.write_text(json.dumps(raw))


def rewrite(path, change, keep_checksum=True):
    """Replace the batch's arrays with ``change(arrays)``; with ``keep_checksum`` the
    ``.json`` is updated to the new arrays (as a hand-edited but consistent batch would be)."""
    npz = path.with_suffix(".npz")
    with np.load(npz) as data:
        arrays = {k: data[k].copy() for k in data.files}
    arrays = change(arrays) or arrays
    with open(npz, "wb") as f:
        np.savez_compressed(f, **arrays)
    if keep_checksum:
        meta = DemoMeta.model_validate_json(path.read_text())
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        path.write_text(meta.model_copy(update={"arrays_sha256": digest}).model_dump_json())


def nan_obs(a):
    a["obs"][2, 0] = np.nan


def inf_cum(a):
    a["cum"][1] = np.inf


def float_actions(a):
    a["action"] = a["action"].astype(np.float64) + 0.7


def out_of_range_action(a):
    a["action"][0] = a["mask"].shape[1] + 3


def forbidden_action(a):
    a["mask"][0, :] = False
    a["mask"][0, 0] = True
    a["action"][0] = 1


def int_mask(a):
    a["mask"] = a["mask"].astype(np.int8)


def short_cum(a):
    a["cum"] = a["cum"][:-1]


def short_returns(a):
    a["returns"] = a["returns"][:-1]


def reversed_rows(a):
    a["step"] = a["step"][::-1].copy()


def noop_row(a):
    a["mask"][0, -1] = True


def unknown_agent(a):
    a["agent"][-1] = 99


def assert_refused(batch, field: str, why: str) -> None:
    """Loading ``batch`` fails with one line naming its file, the field and why."""
    with pytest.raises(DemoFileError) as info:
        load_batch(batch)
    message = str(info.value)
    assert f"'{batch.with_suffix('.npz')}'" in message and f"field '{field}'" in message
    assert why in message and "\n" not in message


@pytest.mark.parametrize("change, field, why", [
    (nan_obs, "obs", "non-finite"), (inf_cum, "cum", "non-finite"),
    (float_actions, "action", "dtype float64"), (out_of_range_action, "action", "outside"),
    (forbidden_action, "action", "mask forbids"), (int_mask, "mask", "dtype int8"),
    (short_cum, "cum", "rows, not"), (short_returns, "returns", "has shape"),
    (reversed_rows, "step", "(step, agent) order"), (noop_row, "mask", "no-op"),
    (unknown_agent, "agent", "outside"),
])
def test_bad_arrays_are_refused_naming_file_and_field(batch, change, field, why):
    rewrite(batch, change)
    assert_refused(batch, field, why)


def dense_nan_obs(a):
    a["obs"][2, 1, 0] = np.nan


def dense_forbidden_action(a):
    a["mask"][0, 0, :] = False
    a["mask"][0, 0, 0] = True
    a["action"][0, 0] = 1


def dense_short_reward(a):
    a["reward"] = a["reward"][:-1]


@pytest.mark.parametrize("change, field, why", [
    (dense_nan_obs, "obs", "non-finite"), (dense_forbidden_action, "action", "mask forbids"),
    (dense_short_reward, "reward", "has shape"),
])
def test_bad_format_1_arrays_are_refused_naming_file_and_field(batch, change, field, why):
    """A batch of store format 1 (dense per-step arrays) is validated as before, then
    converted to decision rows."""
    as_format_1(batch)
    assert load_batch(batch)[1].format == 1
    rewrite(batch, change)
    assert_refused(batch, field, why)


def test_arrays_of_another_batch_are_detected(batch):
    rewrite(batch, nan_obs, keep_checksum=False)
    with pytest.raises(DemoFileError, match="not the ones .* was saved with"):
        load_batch(batch)


def test_pristine_batch_loads(batch):
    rows, meta = load_batch(batch)
    assert meta.arrays_sha256 == hashlib.sha256(batch.with_suffix(".npz").read_bytes()).hexdigest()
    assert meta.format == 2 and rows.action.dtype.kind == "i" and np.isfinite(rows.obs).all()


def test_orphan_npz_is_reported(batch):
    orphan = batch.parent / "lost.npz"
    shutil.copy(batch.with_suffix(".npz"), orphan)
    with pytest.raises(DemoFileError, match="'.*lost.npz' have no metadata 'lost.json'"):
        list_batches(batch.parent)
    orphan.unlink()
    assert list_batches(batch.parent) == [batch]


def test_training_names_the_bad_file_before_torch_sees_it(batch, tmp_path):
    rewrite(batch, nan_obs)
    trainer = Trainer.create(tiny(demos_dir=str(batch.parent)), tmp_path / "runs",
                             progress=False)
    with pytest.raises(DemoFileError, match="field 'obs' has non-finite"):
        trainer.run()
    assert not trainer.run_dir.exists()


def test_demos_of_another_observation_size_are_refused(batch, tmp_path):
    from relied.rl.demos import DemoError

    rewrite(batch, lambda a: a.update(obs=np.concatenate([a["obs"], a["obs"][..., :1]], 1)))
    trainer = Trainer.create(tiny(demos_dir=str(batch.parent)), tmp_path / "runs",
                             progress=False)
    with pytest.raises(DemoError, match="observation features"):
        trainer.load_demos()
