"""On-disk demonstration store: one batch = one ``.npz`` of arrays + one ``.json`` of metadata.

Layout of a store directory::

    <root>/<batch_id>.npz   obs (T,n,obs_dim) float32, action (T,n) int64, mask (T,n,K+1) bool,
                            reward (T,n) float32, done (T,n) bool
    <root>/<batch_id>.json  DemoMeta (scenario, routes, model spec, verdict, transcript, ...)

Both files are written to a temporary name and renamed, the ``.json`` last, so a batch is
visible only when complete. A batch whose files are missing or unreadable raises
:class:`DemoFileError` naming the file; nothing is deleted.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

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
    model_spec: str
    source: str = Field(description="e.g. 'expert-team', 'shortest-path'")
    accepted: bool = True
    verdict: dict[str, Any] | None = None
    rounds: int = 0
    model_calls: int = 0
    transcript: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def save_batch(root: Path, traj: Trajectories, meta: DemoMeta) -> Path:
    """Write one batch atomically; returns the ``.json`` path."""
    root.mkdir(parents=True, exist_ok=True)
    npz, js = root / f"{meta.batch_id}.npz", root / f"{meta.batch_id}.json"
    tmp_npz, tmp_js = root / f".{meta.batch_id}.npz.tmp", root / f".{meta.batch_id}.json.tmp"
    with open(tmp_npz, "wb") as f:
        np.savez_compressed(f, **{k: getattr(traj, k) for k in ARRAY_FIELDS})
    tmp_npz.replace(npz)
    tmp_js.write_text(meta.model_dump_json(indent=1))
    tmp_js.replace(js)
    return js


def load_batch(path: Path) -> tuple[Trajectories, DemoMeta]:
    """Load a batch from its ``.json`` or ``.npz`` path."""
    path = Path(path)
    js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
    try:
        meta = DemoMeta.model_validate_json(js.read_text())
    except FileNotFoundError as exc:
        raise DemoFileError(f"demo metadata '{js}' is missing; regenerate the batch") from exc
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DemoFileError(f"demo metadata '{js}' is corrupt ({type(exc).__name__}); "
                            "regenerate it with 'relied experts generate'") from exc
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ARRAY_FIELDS}
    except FileNotFoundError as exc:
        raise DemoFileError(f"demo arrays '{npz}' are missing; regenerate the batch") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DemoFileError(f"demo arrays '{npz}' are corrupt ({type(exc).__name__}); "
                            "regenerate them with 'relied experts generate'") from exc
    t, n = arrays["action"].shape
    if arrays["obs"].shape[:2] != (t, n) or n != meta.scenario.n_agents:
        raise DemoFileError(f"demo arrays '{npz}' do not match their metadata "
                            f"(shape {arrays['obs'].shape}, {meta.scenario.n_agents} agents)")
    return Trajectories(**arrays), meta


def list_batches(root: Path) -> list[Path]:
    """The complete batches of a store, sorted by id."""
    return sorted(p for p in Path(root).glob("*.json") if not p.name.startswith("."))
