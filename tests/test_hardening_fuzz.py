"""Fuzzing the loaders: malformed Scenario/TrainConfig JSON and random bytes as OSM files,
demo batches, checkpoints, policies, logs and cache entries give one clear one-line error (or a
valid result), never a traceback (issue 10)."""

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from relied.commands.output import error_message
from relied.env.cities import CityError, load_city
from relied.env.scenario import Scenario
from relied.experts.demos import DemoFileError, load_batch
from relied.rl.config import TrainConfig
from relied.rl.demos import shortest_path_demos
from relied.rl.policy import PolicyFileError, load_policy
from relied.rl.run_folder import TrainError, read_metrics
from relied.rl.trainer import Trainer

torch.set_num_threads(1)
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
field_names = st.sampled_from(sorted(TrainConfig.model_fields) + sorted(Scenario.model_fields)
                              + ["bogus"])
objects = st.dictionaries(field_names, json_values, max_size=6)
texts = st.one_of(objects.map(lambda o: json.dumps(o)), st.text(max_size=60),
                  st.binary(max_size=60).map(lambda b: b.decode("latin-1")))


def one_line(exc: BaseException) -> str:
    message = error_message(exc)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@FUZZ
@given(text=texts)
def test_malformed_scenario_json(text):
    try:
        Scenario.model_validate_json(text)
    except ValidationError as exc:
        assert one_line(exc).startswith("invalid Scenario")


@FUZZ
@given(text=texts)
def test_malformed_train_config_json(text):
    try:
        TrainConfig.model_validate_json(text)
    except ValidationError as exc:
        assert one_line(exc).startswith("invalid TrainConfig")


@FUZZ
@given(text=texts)
def test_malformed_config_file_through_the_cli(text):
    from relied.cli import app

    try:
        TrainConfig.model_validate_json(text)
        assume(False)  # a valid config would start training
    except ValidationError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "cfg.json"
        cfg.write_text(text, encoding="utf-8", errors="surrogateescape")
        res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--runs-dir", tmp,
                                       "--no-progress", "--json"])
        assert res.exit_code == 2, res.output
        assert len(res.stderr.strip().splitlines()) == 1
        assert "error" in json.loads(res.stdout)
        assert not (Path(tmp) / "runs").exists()


@settings(max_examples=15, deadline=None)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".osm", ".osm.bz2", ".osm.gz",
                                                              ".graphml"]))
def test_random_bytes_as_osm(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"city{suffix}"
        path.write_bytes(data)
        with pytest.raises(CityError) as info:
            load_city(path, use_cache=False)
        assert str(path) in one_line(info.value)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_as_network_cache_entry(data, tmp_path, monkeypatch, capsys):
    from relied.env import netcache
    from relied.env.cities import shipped_path

    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path))
    entry = netcache.entry_path("west-oakland",
                                netcache.source_sha256(shipped_path("west-oakland")))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(data)
    assert load_city("west-oakland").n_nodes == 22
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one warning, rebuilt


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = TrainConfig(city="west-oakland", n_agents=3, seed=2, experts="shortest-path")
    (path,) = shortest_path_demos(cfg.scenario(), tmp_path_factory.mktemp("demo"))
    return path


@FUZZ
@given(meta=st.binary(max_size=200), arrays=st.binary(max_size=200), keep_meta=st.booleans())
def test_random_bytes_as_demo_batch(demo, meta, arrays, keep_meta):
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / demo.name
        shutil.copy(demo, js) if keep_meta else js.write_bytes(meta)
        js.with_suffix(".npz").write_bytes(arrays)
        with pytest.raises(DemoFileError) as info:
            load_batch(js)
        assert str(Path(tmp)) in one_line(info.value)


def _random_arrays(names: tuple[str, ...], ndim: tuple[int, int]):
    return st.fixed_dictionaries({
        name: st.sampled_from(["float32", "float64", "int64", "bool", "int8"]).flatmap(
            lambda dt: st.lists(st.integers(0, 4), min_size=ndim[0], max_size=ndim[1]).map(
                lambda shape, dt=dt: np.random.default_rng(sum(shape)).normal(
                    size=shape).astype(dt) if dt != "bool" else
                np.random.default_rng(sum(shape)).random(shape) > 0.3))
        for name in names})


DENSE = ("obs", "action", "mask", "reward", "done")  # store format 1
ROWS = ("step", "agent", "obs", "mask", "action", "cum", "returns", "steps")  # format 2


@FUZZ
@given(dense=_random_arrays(DENSE, (1, 3)), rows=_random_arrays(ROWS, (0, 2)),
       fmt=st.sampled_from([1, 2]), squeeze=st.sampled_from(["", "action", "mask", "obs"]))
def test_random_arrays_in_a_demo_batch(demo, dense, rows, fmt, squeeze):
    arrays = dense if fmt == 1 else rows
    if squeeze and arrays[squeeze].ndim and arrays[squeeze].shape[-1]:
        arrays[squeeze] = arrays[squeeze][..., 0]
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / demo.name
        meta = json.loads(demo.read_text())
        meta["arrays_sha256"] = None
        if fmt == 1:
            meta.pop("format")
        js.write_text(json.dumps(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        js.with_suffix(".npz").write_bytes(buf.getvalue())
        try:
            rec, _ = load_batch(js)
        except DemoFileError as exc:
            assert "field '" in one_line(exc)
        else:  # whatever loads is valid decision rows
            assert np.isfinite(rec.obs).all() and rec.action.dtype.kind in "iu"
            assert rec.mask[np.arange(len(rec)), rec.action].all()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = TrainConfig(city="west-oakland", n_agents=3, seed=1, algo="ippo", total_steps=10,
                      horizon_s=300,
                      n_envs=1, minibatch=64)
    t = Trainer.create(cfg, tmp_path_factory.mktemp("runs"), progress=False)
    t.run()
    return t


@FUZZ
@given(data=st.binary(max_size=300), flips=st.lists(st.integers(0, 10**9), max_size=6),
       mode=st.sampled_from(["random", "flipped", "truncated"]))
def test_random_or_damaged_checkpoints(trainer, data, flips, mode):
    good = trainer.folder.checkpoints()[-1].read_bytes()
    if mode == "random":
        blob = data
    elif mode == "flipped":
        b = bytearray(good)
        for f in flips:
            b[f % len(b)] ^= 0xFF
        blob = bytes(b)
    else:
        blob = good[: (flips[0] if flips else 0) % len(good)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt_000001.pt"
        path.write_bytes(blob)
        try:
            trainer.load_checkpoint(path)
        except PolicyFileError as exc:
            assert str(path) in one_line(exc)
        with pytest.raises(PolicyFileError):
            load_policy(path)  # a checkpoint is never a policy file


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_as_policy_through_eval(trainer, data):
    from relied.cli import app

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(trainer.run_dir, run, ignore=shutil.ignore_patterns("tb", ".lock"))
        (run / "policy.pt").write_bytes(data)
        res = CliRunner().invoke(app, ["eval", str(run), "--seeds", "3", "--json"])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
        assert "policy file" in json.loads(res.stdout)["error"]


@FUZZ
@given(text=st.text(max_size=200))
def test_random_metrics_csv(text):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.csv").write_text(text, encoding="utf-8",
                                               errors="surrogateescape")
        try:
            rows = read_metrics(Path(tmp))
        except TrainError as exc:
            assert "metrics" in one_line(exc)
        else:
            assert all({"iteration", "env_steps", "return"} <= set(r) for r in rows)
