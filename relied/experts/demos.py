"""On-disk demonstration store: one batch = one ``.npz`` of decision rows + one ``.json`` of
metadata.

Layout of a store directory (format 2, :data:`FORMAT_VERSION`)::

    <root>/<batch_id>.npz   the decision rows of every learner (a decision: a step at which the
                            learner is at a node), in step order and by agent within a step:
                            step (R,) int64, agent (R,) int64, obs (R,obs_dim) float32,
                            mask (R,K+1) bool, action (R,) int64, cum (R,) float64 (the agent's
                            reward summed over the steps before); returns (n,) float64 (each
                            agent's episode return) and steps () int64 (the episode's length)
    <root>/<batch_id>.json  DemoMeta (scenario, routes, model spec, verdict, transcript, ...)

A batch grows with the decisions, not with ``steps x learners`` (the dense per-step arrays of
format 1 held every learner at every step: about 17 GB at 10,000 learners). Format-1 batches
(``DemoMeta.format`` absent) still load: their dense arrays are validated as before and
converted to decision rows (:meth:`~relied.env.rollout.DecisionRecord.of`, the same rows and
rewards). ``DemoMeta.demo_agents`` (when set) names the learners whose rows are
demonstrations (older files without it: all).

Both files are written to unique temporary names in the store (concurrent writers never share
one) and renamed under a per-batch lock, the ``.json`` last, so a batch is visible only when
complete and its two files always come from the same writer; the ``.json`` records the
``.npz``'s SHA-256. Loading validates every array (dtype, shape, finite values, row order,
actions allowed by the mask) and raises :class:`DemoFileError` naming the file and field; an
``.npz`` without its ``.json`` is reported, not skipped. Nothing is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_serializer, model_validator

from relied.env.netcache import temp_file
from relied.env.rollout import DecisionRecord, Trajectories
from relied.env.sample import SampleInfo
from relied.env.scenario import Scenario

#: the store's format: 1 dense ``(T, n, ...)`` arrays, 2 decision rows
FORMAT_VERSION = 2
ROW_FIELDS = (*DecisionRecord.ROWS, "returns", "steps")
DENSE_FIELDS = ("obs", "action", "mask", "reward", "done")  # format 1


class DemoFileError(ValueError):
    """A demonstration file that cannot be read; the message names it."""


class DemoMeta(BaseModel):
    """Everything needed to know where a batch of demonstrations came from."""

    batch_id: str
    scenario: Scenario
    routes: list[list[int]] = Field(description="node route (OSM ids) per agent")
    demo_agents: list[int] | None = Field(
        None, description="the agents whose rows are demonstrations, sorted (None: all); at "
        "scale the expert team plans a sample and the others drive shortest paths")
    fleet_sample: SampleInfo | None = Field(
        None, description="how the batch was simulated: on this sample of the fleet, with "
        "capacities scaled (relied.env.sample; its learners' rows, under the fleet's ids); "
        "None: the whole fleet (left out of the file then)")
    model_spec: str
    source: str = Field(description="e.g. 'expert-team', 'shortest-path'")
    accepted: bool = True
    verdict: dict[str, Any] | None = None
    rounds: int = 0
    model_calls: int = 0
    transcript: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    arrays_sha256: str | None = Field(None, description="SHA-256 of the batch's .npz file")
    format: int = Field(1, ge=1, description="the .npz layout: 2 decision rows (written now), "
                        "1 dense per-step arrays (absent in those files; converted on load)")

    @model_validator(mode="after")
    def _agents_exist(self) -> DemoMeta:
        ids = self.demo_agents
        if ids is not None and (ids != sorted(set(ids)) or
                                (ids and not 0 <= ids[0] <= ids[-1] < self.scenario.n_agents)):
            raise ValueError(f"demo_agents must be sorted distinct agent ids in "
                             f"0..{self.scenario.n_agents - 1}")
        return self

    @model_serializer(mode="wrap")
    def _without_whole_fleet(self, handler):
        """Leave ``fleet_sample`` out while it is None: a batch of the whole fleet is written
        exactly as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and self.fleet_sample is None:
            data.pop("fleet_sample", None)
        return data


@contextlib.contextmanager
def _batch_lock(root: Path, batch_id: str, exclusive: bool):
    """An advisory lock on one batch of a store (none where the store is read-only or the
    platform has no ``fcntl``)."""
    try:
        import fcntl

        fd = os.open(root / f".{batch_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _temp(root: Path, batch_id: str, suffix: str, data: bytes) -> Path:
    fd, name = temp_file(root, f".{batch_id}.", suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return name


def save_batch(root: Path, rows: DecisionRecord, meta: DemoMeta) -> Path:
    """Write one batch (its decision rows) atomically; returns the ``.json`` path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    npz, js = root / f"{meta.batch_id}.npz", root / f"{meta.batch_id}.json"
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: getattr(rows, k) for k in DecisionRecord.ROWS},
                        returns=np.asarray(rows.returns, dtype=np.float64),
                        steps=np.int64(rows.steps))
    data = buf.getvalue()
    meta = meta.model_copy(update={"arrays_sha256": hashlib.sha256(data).hexdigest(),
                                   "format": FORMAT_VERSION})
    tmp_npz = tmp_js = None
    try:
        tmp_npz = _temp(root, meta.batch_id, ".npz.tmp", data)
        tmp_js = _temp(root, meta.batch_id, ".json.tmp", meta.model_dump_json(indent=1).encode())
        with _batch_lock(root, meta.batch_id, exclusive=True):
            os.replace(tmp_npz, npz)
            os.replace(tmp_js, js)
    finally:
        for tmp in (tmp_npz, tmp_js):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return js


def load_batch(path: Path) -> tuple[DecisionRecord, DemoMeta]:
    """Load and validate a batch from its ``.json`` or ``.npz`` path: its decision rows (a
    format-1 batch's dense arrays converted) and its metadata."""
    path = Path(path)
    js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
    with _batch_lock(path.parent, path.stem, exclusive=False):
        try:
            meta = DemoMeta.model_validate_json(js.read_text())
        except FileNotFoundError as exc:
            raise DemoFileError(f"demo metadata '{js}' is missing; regenerate the batch "
                                "(or delete its .npz)") from exc
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DemoFileError(f"demo metadata '{js}' is corrupt ({type(exc).__name__}); "
                                "regenerate it with 'relied experts generate'") from exc
        except OSError as exc:
            raise DemoFileError(f"demo metadata '{js}' cannot be read "
                                f"({type(exc).__name__})") from exc
        if meta.format > FORMAT_VERSION:
            raise DemoFileError(f"demo batch '{js}' has store format {meta.format}, newer than "
                                f"this relied reads ({FORMAT_VERSION}); upgrade relied or "
                                "regenerate the batch")
        fields = ROW_FIELDS if meta.format == FORMAT_VERSION else DENSE_FIELDS
        try:
            raw = npz.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {k: data[k] for k in fields}
        except FileNotFoundError as exc:
            raise DemoFileError(f"demo arrays '{npz}' are missing; regenerate the batch") \
                from exc
        except Exception as exc:  # noqa: BLE001 - np.load raises many types on bad bytes
            raise DemoFileError(f"demo arrays '{npz}' are corrupt ({type(exc).__name__}); "
                                "regenerate them with 'relied experts generate'") from None
    if meta.arrays_sha256 and hashlib.sha256(raw).hexdigest() != meta.arrays_sha256:
        raise DemoFileError(f"demo arrays '{npz}' are not the ones '{js.name}' was saved with "
                            "(checksum differs); regenerate the batch")
    if meta.format == FORMAT_VERSION:
        check_rows(arrays, meta.scenario.n_agents, npz)
        steps = int(arrays.pop("steps"))
        return DecisionRecord(**arrays, steps=steps), meta
    check_arrays(arrays, meta.scenario.n_agents, npz)
    return DecisionRecord.of(Trajectories(**arrays)), meta


def _bad(npz: Path, field: str, why: str) -> DemoFileError:
    return DemoFileError(f"demo arrays '{npz}': field '{field}' {why}; regenerate the batch "
                         "with 'relied experts generate'")


def _kinds(arrays: dict[str, np.ndarray], npz: Path, kinds: dict[str, str],
           ndims: dict[str, int]) -> None:
    """Dtype kind, number of dimensions and (floats) finite values of each field."""
    for field, kind in kinds.items():
        a = arrays[field]
        if a.dtype.kind not in kind:
            raise _bad(npz, field, f"has dtype {a.dtype} (expected "
                       f"{ {'f': 'float', 'iu': 'integer', 'b': 'bool'}[kind]})")
        if a.ndim != ndims[field]:
            raise _bad(npz, field, f"has shape {a.shape} ({ndims[field]} dimensions expected)")
        if kind == "f" and not np.isfinite(a).all():
            raise _bad(npz, field, "has non-finite values (NaN or inf)")


def check_rows(arrays: dict[str, np.ndarray], n_agents: int, npz: Path) -> None:
    """:class:`DemoFileError` naming ``npz`` and the field unless the arrays are valid
    decision rows (format 2): dtypes, shapes ``(R, ...)``, ``returns (n,)``, finite floats,
    agents and steps in range, rows in (step, agent) order, each a decision (the no-op
    masked) whose action its mask allows."""
    _kinds(arrays, npz, {"step": "iu", "agent": "iu", "obs": "f", "mask": "b", "action": "iu",
                         "cum": "f", "returns": "f", "steps": "iu"},
           {"step": 1, "agent": 1, "obs": 2, "mask": 2, "action": 1, "cum": 1, "returns": 1,
            "steps": 0})
    rows, steps = len(arrays["step"]), int(arrays["steps"])
    for field in DecisionRecord.ROWS:
        if len(arrays[field]) != rows:
            raise _bad(npz, field, f"has {len(arrays[field])} rows, not {rows}")
    if arrays["returns"].shape != (n_agents,):
        raise _bad(npz, "returns", f"has shape {arrays['returns'].shape} for {n_agents} agents")
    step, agent = arrays["step"].astype(np.int64), arrays["agent"].astype(np.int64)
    if steps < 1 or (rows and (step.min() < 0 or step.max() >= steps)):
        raise _bad(npz, "step", f"has values outside 0..{steps - 1}")
    if rows and (agent.min() < 0 or agent.max() >= n_agents):
        raise _bad(npz, "agent", f"has values outside 0..{n_agents - 1}")
    if (np.diff(step * n_agents + agent) <= 0).any():
        raise _bad(npz, "step", "is not in (step, agent) order without repeats")
    mask, action = arrays["mask"], arrays["action"].astype(np.int64)
    k1 = mask.shape[1]
    if k1 < 2 or (action < 0).any() or (action >= k1).any():
        raise _bad(npz, "action", f"has values outside 0..{k1 - 1}")
    if mask[:, -1].any():
        raise _bad(npz, "mask", "allows the no-op in a decision row")
    allowed = mask[np.arange(rows), action]
    if not allowed.all():
        r = int(np.flatnonzero(~allowed)[0])
        raise _bad(npz, "action", f"picks an action its mask forbids (step {int(step[r])}, "
                   f"agent {int(agent[r])})")


def check_arrays(arrays: dict[str, np.ndarray], n_agents: int, npz: Path) -> None:
    """:class:`DemoFileError` naming ``npz`` and the field unless the arrays are a valid
    dense recording (format 1): dtypes, shapes ``(T, n, ...)``, finite floats, actions
    allowed by the mask."""
    _kinds(arrays, npz, {"obs": "f", "action": "iu", "mask": "b", "reward": "f", "done": "b"},
           {"obs": 3, "action": 2, "mask": 3, "reward": 2, "done": 2})
    t, n = arrays["action"].shape
    if t < 1 or n != n_agents:
        raise _bad(npz, "action", f"has shape {(t, n)} for {n_agents} agents")
    for field in DENSE_FIELDS:
        if arrays[field].shape[:2] != (t, n):
            raise _bad(npz, field, f"has shape {arrays[field].shape}, not ({t}, {n}, ...)")
    k1 = arrays["mask"].shape[2]
    action = arrays["action"]
    if k1 < 2 or (action < 0).any() or (action >= k1).any():
        raise _bad(npz, "action", f"has values outside 0..{k1 - 1}")
    allowed = np.take_along_axis(arrays["mask"], action[..., None].astype(np.int64), 2)[..., 0]
    if not allowed.all():
        step, agent = (int(x[0]) for x in np.nonzero(~allowed))
        raise _bad(npz, "action", f"picks an action its mask forbids (step {step}, "
                   f"agent {agent})")


def list_batches(root: Path) -> list[Path]:
    """The complete batches of a store, sorted by id; :class:`DemoFileError` for an ``.npz``
    whose ``.json`` is missing (an interrupted copy), once no writer is renaming it."""
    root = Path(root)
    for npz in sorted(root.glob("*.npz")):
        if npz.name.startswith(".") or npz.with_suffix(".json").exists():
            continue
        with _batch_lock(root, npz.stem, exclusive=False):
            orphan = not npz.with_suffix(".json").exists()
        if orphan:
            raise DemoFileError(f"demo arrays '{npz}' have no metadata "
                                f"'{npz.with_suffix('.json').name}'; copy it along or delete "
                                "the .npz")
    return sorted(p for p in root.glob("*.json") if not p.name.startswith("."))
