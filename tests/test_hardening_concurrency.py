"""Concurrent writers, tested with real processes (issue 10, item 7)."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relied.env.rollout import DecisionRecord
from relied.env.scenario import Scenario
from relied.experts.demos import DemoMeta, list_batches, load_batch, save_batch
from relied.rl.config import TrainConfig
from relied.rl.run_folder import new_run_dir

CTX = mp.get_context("fork")


def _traj(value: int) -> DecisionRecord:
    t, n, k1 = 5, 3, 4
    mask = np.ones((t * n, k1), dtype=bool)
    mask[:, -1] = False
    step, agent = np.divmod(np.arange(t * n), n)
    return DecisionRecord(step=step, agent=agent, obs=np.full((t * n, 6), value, np.float32),
                          mask=mask, action=np.zeros(t * n, dtype=np.int64),
                          cum=np.full(t * n, value, dtype=np.float64),
                          returns=np.full(n, value, dtype=np.float64), steps=t)


def _writer(root: str, writer: int, rounds: int, barrier) -> None:
    meta = DemoMeta(batch_id="shared", scenario=Scenario(city="west-oakland", n_agents=3),
                    routes=[[1], [2], [3]], model_spec="test", source="test",
                    extra={"writer": writer})
    barrier.wait()
    for _ in range(rounds):
        save_batch(Path(root), _traj(writer), meta)


def _reader(root: str, rounds: int, barrier, errors) -> None:
    barrier.wait()
    for _ in range(rounds):
        paths = list_batches(Path(root))
        for p in paths:
            traj, meta = load_batch(p)
            if float(traj.returns[0]) != meta.extra["writer"]:
                errors.put(f"arrays of writer {traj.returns[0]} with metadata of "
                           f"{meta.extra['writer']}")


def test_concurrent_batch_writers_never_collide_or_mix(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    writers, rounds = 4, 40
    barrier = CTX.Barrier(writers + 1)
    errors = CTX.Queue()
    procs = [CTX.Process(target=_writer, args=(str(root), w, rounds, barrier))
             for w in range(writers)]
    procs.append(CTX.Process(target=_reader, args=(str(root), rounds, barrier, errors)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * (writers + 1)
    assert errors.empty(), errors.get()
    traj, meta = load_batch(root / "shared.json")
    assert float(traj.returns[0]) == meta.extra["writer"]
    assert sorted(p.name for p in root.iterdir()) == [".shared.lock", "shared.json", "shared.npz"]


def _make_run_dir(root: str, barrier, out) -> None:
    cfg = TrainConfig(city="west-oakland", algo="ippo", seed=3)
    barrier.wait()
    out.put(str(new_run_dir(Path(root), cfg)))


def test_concurrent_runs_get_distinct_folders(tmp_path):
    n = 8
    for _ in range(3):
        barrier, out = CTX.Barrier(n), CTX.Queue()
        procs = [CTX.Process(target=_make_run_dir, args=(str(tmp_path), barrier, out))
                 for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * n
    made = [out.get() for _ in range(n)]
    assert len(set(made)) == n
    assert len(list((tmp_path / "west-oakland" / "ippo" / "3").iterdir())) == 3 * n


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "relied.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("verb", ["experts", "train"])
def test_concurrent_cli_runs_into_the_same_folder(tmp_path, verb):
    if verb == "experts":
        args = ["experts", "generate", "--city", "west-oakland", "--agents", "4", "--out",
                str(tmp_path / "demos"), "--no-cache", "--no-progress", "--json"]
        n = 3
    else:
        args = ["train", "--city", "west-oakland", "--agents", "3", "--algo", "ippo", "--steps",
                "10", "--envs", "1", "--runs-dir", str(tmp_path / "runs"), "--no-progress",
                "--json"]
        n = 2
    procs = [_cli(*args, cwd=tmp_path) for _ in range(n)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    if verb == "experts":
        saved = {path for r in results for path in r["saved"]}
        assert len(saved) == 1
        traj, meta = load_batch(Path(saved.pop()))
        assert meta.arrays_sha256 and traj.returns.shape == (4,)
        assert not [p for p in (tmp_path / "demos").iterdir() if p.name.endswith(".tmp")]
    else:
        dirs = {r["run_dir"] for r in results}
        assert len(dirs) == n and all((Path(d) / "policy.pt").is_file() for d in dirs)
