"""Seeding and the state of every random generator a run draws from (Python, numpy, torch),
as plain tensors and numbers, so that a checkpoint restores it with ``weights_only=True``."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def global_rng_state() -> dict:
    """The global torch, numpy and Python generator states, as tensors and numbers."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": np_state["bit_generator"],
                      "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]),
                      "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "python": {"version": py_version,
                       "state": torch.tensor(py_state, dtype=torch.int64),
                       "gauss_next": py_gauss}}


def restore_global_rng(state: dict) -> None:
    """Set the generators to a :func:`global_rng_state`."""
    torch.set_rng_state(state["torch"])
    npr = state["numpy"]
    np.random.set_state({"bit_generator": str(npr["bit_generator"]),
                         "state": {"key": npr["key"].numpy().astype(np.uint32),
                                   "pos": int(npr["pos"])},
                         "has_gauss": int(npr["has_gauss"]),
                         "gauss": float(npr["gauss"])})
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()),
                     None if py["gauss_next"] is None else float(py["gauss_next"])))
