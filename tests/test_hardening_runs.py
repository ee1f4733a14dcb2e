"""Run folders are untrusted on resume/eval: pickled payloads, corrupt logs, moved or changed
city files, stub folders of failed runs (issue 10, items 1, 6, 9, 12)."""

import builtins
import os
import shutil

import pytest
import torch

from relied.rl.config import TrainConfig
from relied.rl.demos import DemoError, shortest_path_demos
from relied.rl.policy import PolicyFileError, load_policy
from relied.rl.run_folder import TrainError, read_metrics
from relied.rl.trainer import Trainer

torch.set_num_threads(1)


def tiny(**kw) -> TrainConfig:
    base = dict(city="west-oakland", n_agents=4, seed=1, experts="shortest-path", horizon_s=300,
                total_steps=10, n_envs=1, minibatch=64, expert_batch=64, algo="ippo")
    return TrainConfig(**(base | kw))


class Payload:
    """Unpickling this calls ``open(target, "w")``: it creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    trainer = Trainer.create(tiny(total_steps=400, keep_checkpoints=3), root, progress=False)
    trainer.run()
    return trainer.run_dir


def copy_run(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def test_pickled_payload_in_a_checkpoint_is_refused_without_running(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    marker = tmp_path / "pwned"
    good = torch.load(sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=True)
    evil = dict(good, counters=Payload(marker))
    path = run / "checkpoints" / "ckpt_999999.pt"
    torch.save(evil, path)
    # the payload is real: an unrestricted load runs it
    probe = tmp_path / "probe.pt"
    torch.save({"x": Payload(tmp_path / "probe-ran")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-ran").exists()
    with pytest.raises(PolicyFileError, match="ckpt_999999.pt' is corrupt or unsafe"):
        Trainer.resume(run, progress=False)
    assert not marker.exists()
    # a raw (non-zip) pickle stream is refused the same way
    import pickle

    path.write_bytes(pickle.dumps({"format": 2, "counters": Payload(marker)}, protocol=2))
    with pytest.raises(PolicyFileError, match="corrupt or unsafe"):
        Trainer.resume(run, progress=False)
    assert not marker.exists()


def test_pickled_payload_in_a_policy_file_is_refused(finished, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "policy.pt"
    torch.save({"kwargs": Payload(marker), "state_dict": {}, "config": {}}, path)
    with pytest.raises(PolicyFileError, match="corrupt"):
        load_policy(path)
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_types(finished):
    from torch.serialization import get_unsafe_globals_in_checkpoint

    for ckpt in (finished / "checkpoints").glob("ckpt_*.pt"):
        assert get_unsafe_globals_in_checkpoint(ckpt) == []
        state = torch.load(ckpt, weights_only=True)
        assert isinstance(state["python"]["state"], torch.Tensor)
        assert isinstance(state["numpy"]["key"], torch.Tensor)


def test_checkpoint_with_wrong_counters_or_shapes_is_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    last = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(last, weights_only=True)
    for broken in (dict(state, counters={**state["counters"], "env_steps": -5}),
                   dict(state, dtw_km=torch.zeros(99, dtype=torch.float64)),
                   {k: v for k, v in state.items() if k != "optim"}):
        torch.save(broken, last)
        with pytest.raises(PolicyFileError, match="corrupt or unsafe"):
            Trainer.resume(run, progress=False)
    torch.save(state, last)
    assert Trainer.resume(run, progress=False).counters == state["counters"]


def test_corrupt_metrics_csv_names_file_and_line(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    path = run / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[2] = "1,abc\n"
    path.write_text("".join(lines))
    with pytest.raises(TrainError, match=r"metrics.csv' is corrupt at line 3"):
        Trainer.resume(run, progress=False)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TrainError, match="metrics file .*metrics.csv"):
        read_metrics(run)


def test_row_cut_by_a_kill_is_dropped_on_resume(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    path = run / "metrics.csv"
    full = read_metrics(run)
    path.write_text(path.read_text() + "999,12")  # half a row, no newline
    assert repr(read_metrics(run)) == repr(full)  # (NaN-safe comparison)
    resumed = Trainer.resume(run, progress=False)
    assert len(read_metrics(run)) == resumed.counters["iteration"]
    assert path.read_text().endswith("\n")


def test_a_second_process_cannot_train_the_same_run_folder(finished, tmp_path):
    import subprocess
    import sys

    run = copy_run(finished, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True);"
         " time.sleep(60)", str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainError, match="being trained by another process"):
            Trainer.resume(run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    Trainer.resume(run, progress=False)  # free again once the other process is gone


def test_city_file_is_stored_absolute_with_its_hash(tmp_path, monkeypatch):
    from relied.env.cities import shipped_path
    from relied.rl.evaluate import evaluate_run

    src = tmp_path / "maps" / "oak.osm.bz2"
    src.parent.mkdir()
    shutil.copy(shipped_path("west-oakland"), src)
    monkeypatch.chdir(tmp_path)
    trainer = Trainer.create(tiny(city="maps/oak.osm.bz2"), tmp_path / "runs", progress=False)
    trainer.run()
    cfg = TrainConfig.load(trainer.run_dir / "config.json")
    assert cfg.city == str(src) and len(cfg.city_sha256) == 64
    monkeypatch.chdir(tmp_path / "runs")  # eval from another folder finds the file
    assert evaluate_run(trainer.run_dir, [5])["city"] == str(src)
    data = bytearray(src.read_bytes())
    shutil.copy(shipped_path("monaco"), src)  # another file at the same path
    with pytest.raises(TrainError, match="changed since run .* was trained"):
        evaluate_run(trainer.run_dir, [5])
    with pytest.raises(TrainError, match="changed since"):
        Trainer.resume(trainer.run_dir, progress=False)
    src.write_bytes(bytes(data))
    assert evaluate_run(trainer.run_dir, [5])["policies"]
    src.unlink()
    with pytest.raises(TrainError, match="does not exist .*pass --city"):
        evaluate_run(trainer.run_dir, [5])
    assert evaluate_run(trainer.run_dir, [5], city="west-oakland")["city"] == "west-oakland"


def test_failed_training_leaves_no_stub_folder(tmp_path):
    other = tiny(seed=7).scenario()
    store = tmp_path / "store"
    shortest_path_demos(other, store)
    runs = tmp_path / "runs"
    runs.mkdir()
    keep = runs / "west-oakland" / "reled" / "1" / "older-run"
    keep.mkdir(parents=True)
    trainer = Trainer.create(tiny(algo="reled", demos_dir=str(store)), runs, progress=False)
    assert trainer.run_dir.is_dir()
    with pytest.raises(DemoError, match="another scenario"):
        trainer.run()
    assert not trainer.run_dir.exists()
    assert sorted(p.name for p in keep.parent.iterdir()) == ["older-run"]  # others untouched
    keep.rmdir()
    with pytest.raises(DemoError):
        Trainer.create(tiny(algo="reled", demos_dir=str(store)), runs, progress=False).run()
    assert list(runs.iterdir()) == []  # empty parents removed too


def test_run_that_checkpointed_keeps_its_folder_on_failure(tmp_path, monkeypatch):
    trainer = Trainer.create(tiny(total_steps=400), tmp_path, progress=False)
    calls = []

    def iterate_then_fail(venv, original=trainer.iterate):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(venv)

    monkeypatch.setattr(trainer, "iterate", iterate_then_fail)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert len(trainer.folder.checkpoints()) == 1 and len(read_metrics(trainer.run_dir)) == 1
    assert Trainer.resume(trainer.run_dir, progress=False).counters["iteration"] == 1


def test_config_takes_the_fallible_stress_test_expert():
    assert tiny(algo="reled", experts="offline-fallible:0.8:freeflow").experts == \
        "offline-fallible:0.8:freeflow"


@pytest.mark.parametrize("kw, field", [
    (dict(experts="gpt4"), "experts"), (dict(experts="offline-fallible:1.5"), "experts"),
    (dict(seed=-5), "seed"), (dict(epsilon=-1.0), "epsilon"),
    (dict(epsilon=float("inf")), "epsilon"), (dict(lr=float("nan")), "lr"),
    (dict(timeout_s=0), "timeout_s"), (dict(n_agents=200_000), "n_agents"),
    (dict(horizon_s=100, departure_window_s=200), "departure_window_s"),
    (dict(algo="ippo", demos_dir="x"), "demos_dir"), (dict(algo="mappo", regen_every=2),
                                                      "regen_every"),
])
def test_config_rejects_bad_values_naming_the_field(kw, field):
    from pydantic import ValidationError

    from relied.commands.output import validation_message

    with pytest.raises(ValidationError) as info:
        tiny(**kw)
    message = validation_message(info.value)
    assert field in message and "\n" not in message and message.startswith("invalid TrainConfig")


def test_ollama_down_fails_before_a_run_folder_exists(tmp_path):
    with pytest.raises(TrainError, match="not reachable at http://127.0.0.1:9 .*--experts offline"):
        Trainer.create(tiny(algo="reled", experts="ollama:qwen2.5", ollama_host="127.0.0.1:9"),
                       tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_run_folder_of_an_unrelated_file_is_never_removed(tmp_path):
    from relied.rl.run_folder import discard_run_dir

    root = tmp_path / "runs"
    run = root / "c" / "ippo" / "0" / "stamp"
    run.mkdir(parents=True)
    (root / "c" / "ippo" / "0" / "notes.txt").write_text("keep")
    discard_run_dir(run, root)
    assert not run.exists() and (root / "c" / "ippo" / "0" / "notes.txt").exists()
    assert os.listdir(root) == ["c"]


def test_policy_file_with_inflated_sizes_is_refused_before_allocating(finished, tmp_path):
    data = torch.load(finished / "policy.pt", weights_only=True)
    path = tmp_path / "policy.pt"
    torch.save(dict(data, kwargs=dict(data["kwargs"], hidden=10**6, n_agents=10**6)), path)
    with pytest.raises(PolicyFileError, match="corrupt"):
        load_policy(path)  # (10^12 weights would not fit in memory: refused from the sizes)
    torch.save(data, path)
    assert load_policy(path)[1] == data["config"]
