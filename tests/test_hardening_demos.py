"""Demonstration batches are validated on load, naming the file and field (issue 10, item 4)."""

import hashlib
import shutil

import numpy as np
import pytest

from relied.experts.demos import DemoFileError, DemoMeta, list_batches, load_batch
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
    a["obs"][2, 1, 0] = np.nan


def inf_reward(a):
    a["reward"][1, 0] = np.inf


def float_actions(a):
    a["action"] = a["action"].astype(np.float64) + 0.7


def out_of_range_action(a):
    a["action"][0, 0] = a["mask"].shape[2] + 3


def forbidden_action(a):
    t, i = 0, 0
    a["mask"][t, i, :] = False
    a["mask"][t, i, 0] = True
    a["action"][t, i] = 1


def int_mask(a):
    a["mask"] = a["mask"].astype(np.int8)


def short_reward(a):
    a["reward"] = a["reward"][:-1]


@pytest.mark.parametrize("change, field, why", [
    (nan_obs, "obs", "non-finite"), (inf_reward, "reward", "non-finite"),
    (float_actions, "action", "dtype float64"), (out_of_range_action, "action", "outside"),
    (forbidden_action, "action", "mask forbids"), (int_mask, "mask", "dtype int8"),
    (short_reward, "reward", "has shape"),
])
def test_bad_arrays_are_refused_naming_file_and_field(batch, change, field, why):
    rewrite(batch, change)
    with pytest.raises(DemoFileError) as info:
        load_batch(batch)
    message = str(info.value)
    assert f"'{batch.with_suffix('.npz')}'" in message and f"field '{field}'" in message
    assert why in message and "\n" not in message


def test_arrays_of_another_batch_are_detected(batch):
    rewrite(batch, nan_obs, keep_checksum=False)
    with pytest.raises(DemoFileError, match="not the ones .* was saved with"):
        load_batch(batch)


def test_pristine_batch_loads(batch):
    traj, meta = load_batch(batch)
    assert meta.arrays_sha256 == hashlib.sha256(batch.with_suffix(".npz").read_bytes()).hexdigest()
    assert traj.action.dtype.kind == "i" and np.isfinite(traj.obs).all()


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

    rewrite(batch, lambda a: a.update(obs=np.concatenate([a["obs"], a["obs"][..., :1]], 2)))
    trainer = Trainer.create(tiny(demos_dir=str(batch.parent)), tmp_path / "runs",
                             progress=False)
    with pytest.raises(DemoError, match="observation features"):
        trainer.load_demos()
