"""RunFolder: the run folder's files, apart from the algorithm."""

import pytest
import torch

from relied.rl.config import TrainConfig
from relied.rl.run_folder import CSV_FIELDS, RunFolder, TrainError, read_metrics
from relied.rl.seeding import global_rng_state, restore_global_rng


def test_metrics_append_then_truncate_keeps_rows_up_to_the_iteration(tmp_path):
    folder = RunFolder(tmp_path)
    for it in (1, 2, 3):
        folder.append_metrics({"iteration": it, "env_steps": 10 * it, "return": -1.5 * it})
    with open(folder.metrics_path, "a") as f:
        f.write("4,40")  # a row cut by a kill: no newline
    folder.truncate_metrics(2)
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1.0, 2.0]
    assert [r["return"] for r in rows] == [-1.5, -3.0]
    assert folder.metrics_path.read_text().splitlines()[0] == ",".join(CSV_FIELDS)


def test_checkpoints_keep_the_newest_and_refuse_another_format(tmp_path):
    folder = RunFolder(tmp_path)
    for it in (1, 2, 3, 4):
        folder.save_checkpoint(it, {"x": torch.tensor([float(it)])}, keep=2)
    kept = folder.checkpoints()
    assert [p.name for p in kept] == ["ckpt_000003.pt", "ckpt_000004.pt"]
    assert folder.load_checkpoint(kept[-1])["x"].item() == 4.0
    torch.save({"format": 1, "x": torch.zeros(1)}, kept[0])
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        folder.load_checkpoint(kept[0])


def test_a_second_lock_is_refused_and_a_new_empty_folder_is_discarded(tmp_path):
    cfg = TrainConfig(city="west-oakland", algo="ippo", seed=3)
    folder = RunFolder.create(tmp_path / "runs", cfg)
    assert folder.path.parent == tmp_path / "runs" / "west-oakland" / "ippo" / "3"
    folder.lock()
    with pytest.raises(TrainError, match="being trained by another process"):
        RunFolder(folder.path).lock()
    folder.discard_if_new()
    assert not (tmp_path / "runs").joinpath("west-oakland").exists()


def test_missing_and_corrupt_configs_are_one_line_errors(tmp_path):
    with pytest.raises(TrainError, match="not a run folder"):
        RunFolder(tmp_path).load_config()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TrainError, match="is corrupt"):
        RunFolder(tmp_path).load_config()


def test_global_rng_state_round_trips():
    import random

    import numpy as np

    state = global_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_global_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
