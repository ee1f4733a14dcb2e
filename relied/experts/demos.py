"""On-disk demonstration store: one batch = one ``.npz`` of arrays + one ``.json`` of metadata.

Layout of a store directory::

    <root>/<batch_id>.npz   obs (T,n,obs_dim) float32, action (T,n) int64, mask (T,n,K+1) bool,
                            reward (T,n) float32, done (T,n) bool
    <root>/<batch_id>.json  DemoMeta (scenario, routes, model spec, verdict, transcript, ...)

The arrays hold every learner; ``DemoMeta.demo_agents`` (when set) names the learners whose
rows are demonstrations (older files without it: all).

Both files are written to unique temporary names in the store (concurrent writers never share
one) and renamed under a per-batch lock, the ``.json`` last, so a batch is visible only when
complete and its two files always come from the same writer; the ``.json`` records the
``.npz``'s SHA-256. Loading validates every array (dtype, shape, finite values, actions
allowed by the mask) and raises :class:`DemoFileError` naming the file and field; an ``.npz``
without its ``.json`` is reported, not skipped. Nothing is deleted.
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
from pydantic import BaseModel, Field, ValidationError, model_validator

from relied.env.netcache import temp_file
from relied.env.rollout import Trajectories
from relied.env.scenario import Scenario

ARRAY_FIELDS = ("obs", "action", "mask", "reward", "done")


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

    @model_validator(mode="after")
    def _agents_exist(self) -> DemoMeta:
        ids = self.demo_agents
        if ids is not None and (ids != sorted(set(ids)) or
                                (ids and not 0 <= ids[0] <= ids[-1] < self.scenario.n_agents)):
            raise ValueError(f"demo_agents must be sorted distinct agent ids in "
                             f"0..{self.scenario.n_agents - 1}")
        return self


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


def save_batch(root: Path, traj: Trajectories, meta: DemoMeta) -> Path:
    """Write one batch atomically; returns the ``.json`` path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    npz, js = root / f"{meta.batch_id}.npz", root / f"{meta.batch_id}.json"
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: getattr(traj, k) for k in ARRAY_FIELDS})
    data = buf.getvalue()
    meta = meta.model_copy(update={"arrays_sha256": hashlib.sha256(data).hexdigest()})
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


def load_batch(path: Path) -> tuple[Trajectories, DemoMeta]:
    """Load and validate a batch from its ``.json`` or ``.npz`` path."""
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
        try:
            raw = npz.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {k: data[k] for k in ARRAY_FIELDS}
        except FileNotFoundError as exc:
            raise DemoFileError(f"demo arrays '{npz}' are missing; regenerate the batch") \
                from exc
        except Exception as exc:  # noqa: BLE001 - np.load raises many types on bad bytes
            raise DemoFileError(f"demo arrays '{npz}' are corrupt ({type(exc).__name__}); "
                                "regenerate them with 'relied experts generate'") from None
    if meta.arrays_sha256 and hashlib.sha256(raw).hexdigest() != meta.arrays_sha256:
        raise DemoFileError(f"demo arrays '{npz}' are not the ones '{js.name}' was saved with "
                            "(checksum differs); regenerate the batch")
    check_arrays(arrays, meta.scenario.n_agents, npz)
    return Trajectories(**arrays), meta


def check_arrays(arrays: dict[str, np.ndarray], n_agents: int, npz: Path) -> None:
    """:class:`DemoFileError` naming ``npz`` and the field unless the arrays are a valid
    recording: dtypes, shapes ``(T, n, ...)``, finite floats, actions allowed by the mask."""

    def bad(field: str, why: str) -> DemoFileError:
        return DemoFileError(f"demo arrays '{npz}': field '{field}' {why}; regenerate the "
                             "batch with 'relied experts generate'")

    kinds = {"obs": "f", "action": "iu", "mask": "b", "reward": "f", "done": "b"}
    ndims = {"obs": 3, "action": 2, "mask": 3, "reward": 2, "done": 2}
    for field, kind in kinds.items():
        a = arrays[field]
        if a.dtype.kind not in kind:
            raise bad(field, f"has dtype {a.dtype} (expected "
                      f"{ {'f': 'float', 'iu': 'integer', 'b': 'bool'}[kind]})")
        if a.ndim != ndims[field]:
            raise bad(field, f"has shape {a.shape} ({ndims[field]} dimensions expected)")
        if kind == "f" and not np.isfinite(a).all():
            raise bad(field, "has non-finite values (NaN or inf)")
    t, n = arrays["action"].shape
    if t < 1 or n != n_agents:
        raise bad("action", f"has shape {(t, n)} for {n_agents} agents")
    for field in ARRAY_FIELDS:
        if arrays[field].shape[:2] != (t, n):
            raise bad(field, f"has shape {arrays[field].shape}, not ({t}, {n}, ...)")
    k1 = arrays["mask"].shape[2]
    action = arrays["action"]
    if k1 < 2 or (action < 0).any() or (action >= k1).any():
        raise bad("action", f"has values outside 0..{k1 - 1}")
    allowed = np.take_along_axis(arrays["mask"], action[..., None].astype(np.int64), 2)[..., 0]
    if not allowed.all():
        step, agent = (int(x[0]) for x in np.nonzero(~allowed))
        raise bad("action", f"picks an action its mask forbids (step {step}, agent {agent})")


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
