"""Demonstrations are stored as decision rows (store format 2, issue 13): the same training
transitions as the dense per-step arrays of format 1, which still load through a converter."""

import hashlib
import io
import json

import numpy as np
import pytest

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import CongestionAwarePolicy
from relied.env.rollout import DecisionRecord, run_episode
from relied.env.scenario import Scenario
from relied.experts.demos import (
    DENSE_FIELDS,
    FORMAT_VERSION,
    DemoFileError,
    DemoMeta,
    load_batch,
    save_batch,
)
from relied.rl.demos import decisions_of, demonstrated, load_expert_set
from relied.rl.rollout import Decisions, decisions_from

SC = Scenario(city="aguascalientes", n_agents=30, seed=5, min_trip_m=200,
              background_share=0.5, departure_window_s=120.0, horizon_s=900.0)


@pytest.fixture(scope="module")
def episodes():
    """One congestion-aware episode recorded densely and as decision rows."""
    net = load_city(SC.city)
    dense = run_episode(RoutingCore(net, SC, record_routes=True), CongestionAwarePolicy(),
                        record=True)
    rows = run_episode(RoutingCore(net, SC, record_routes=True), CongestionAwarePolicy(),
                       decisions=True)
    return net, dense, rows


def _same(a, b, fields):
    for field in fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert getattr(a, field).dtype == getattr(b, field).dtype, field


def test_rows_are_those_of_the_dense_recording(episodes):
    _, dense, rows = episodes
    assert dense.metrics["mean_travel_time"] == rows.metrics["mean_travel_time"]
    np.testing.assert_array_equal(dense.returns, rows.returns)
    rec = rows.decisions
    assert len(rec) > 100 and rec.steps == dense.steps and rec.nbytes < \
        sum(getattr(dense.trajectories, f).nbytes for f in DENSE_FIELDS) / 10
    _same(rec, DecisionRecord.of(dense.trajectories), (*DecisionRecord.ROWS, "returns"))


def test_training_transitions_are_bit_identical(episodes):
    net, dense, rows = episodes
    k = RoutingCore(net, SC).k
    old, new = decisions_from(dense.trajectories, k), decisions_of(rows.decisions, k)
    _same(old, new, Decisions.__dataclass_fields__)
    some = [1, 4, 7, 22]
    _same(demonstrated(old, some), demonstrated(new, some), Decisions.__dataclass_fields__)
    assert np.array_equal(dense.trajectories.reward.sum(axis=0), rows.decisions.returns)


def _meta(net, episode, batch_id="b"):
    return DemoMeta(batch_id=batch_id, scenario=SC.resolve(net), model_spec="test",
                    source="test", routes=[net.osm_ids[r].tolist() for r in episode.routes])


def _format1(path, episode):
    """Rewrite a stored batch as format 1 wrote it: dense arrays, no ``format`` field."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f: getattr(episode.trajectories, f) for f in DENSE_FIELDS})
    path.with_suffix(".npz").write_bytes(buf.getvalue())
    meta = json.loads(path.read_text())
    meta.pop("format")
    meta["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    path.write_text(json.dumps(meta))


def test_store_round_trip_and_format_1_converter(episodes, tmp_path):
    net, dense, rows = episodes
    new = save_batch(tmp_path / "new", rows.decisions, _meta(net, rows))
    loaded, meta = load_batch(new)
    assert meta.format == FORMAT_VERSION == 2
    _same(loaded, rows.decisions, (*DecisionRecord.ROWS, "returns"))
    assert loaded.steps == rows.decisions.steps
    old = save_batch(tmp_path / "old", rows.decisions, _meta(net, rows))
    _format1(old, dense)
    converted, meta1 = load_batch(old)
    assert meta1.format == 1
    _same(converted, rows.decisions, (*DecisionRecord.ROWS, "returns"))
    assert old.with_suffix(".npz").stat().st_size > new.with_suffix(".npz").stat().st_size
    core = RoutingCore(net, SC)
    a = load_expert_set([new], core, 0.99, accepted_only=False)
    b = load_expert_set([old], core, 0.99, accepted_only=False)
    _same(a.dec, b.dec, Decisions.__dataclass_fields__)
    np.testing.assert_array_equal(a.ret, b.ret)
    np.testing.assert_array_equal(a.agent_return, b.agent_return)


def test_a_newer_format_is_refused_in_one_line(episodes, tmp_path):
    net, _, rows = episodes
    path = save_batch(tmp_path, rows.decisions, _meta(net, rows))
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "format": FORMAT_VERSION + 1}))
    with pytest.raises(DemoFileError) as info:
        load_batch(path)
    message = str(info.value)
    assert "format 3" in message and "upgrade relied" in message and "\n" not in message
