"""A trained policy as a batched reference-style policy, and its ``policy.pt`` file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from relied.env.core import RoutingCore
from relied.env.netcache import temp_file
from relied.rl.hybrid_ppo import masked_greedy
from relied.rl.model import ActorCritic


class PolicyFileError(ValueError):
    """A policy or checkpoint file that cannot be read; the message names it."""


class TrainedPolicy:
    """Greedy (most likely valid action under the core's mask, as in training) policy of a
    trained model over a :class:`RoutingCore` of any city; agent ``i`` of any scenario uses
    the weights of trained agent ``i mod groups``."""

    def __init__(self, model: ActorCritic):
        self.model = model.eval()

    def __call__(self, core: RoutingCore) -> np.ndarray:
        mask = core.action_mask()
        deciding = np.flatnonzero(mask[:, : core.k].any(axis=1))
        actions = np.full(core.n, core.noop, dtype=np.int64)
        if deciding.size:
            actions[deciding] = masked_greedy(self.model, core.observe()[deciding],
                                              mask[deciding], deciding)
        return actions


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to a unique temporary file next to ``path``, synced, then renamed: a
    reader sees the old file or the whole new one, and concurrent writers never share a name."""
    path = Path(path)
    fd, tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def safe_torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain Python values only, so a pickled
    object in the file is refused instead of run; torch's warnings about odd pickle protocols
    in damaged files are not shown (the caller reports the file in one line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def on_cpu(obj: object) -> object:
    """``obj`` (nested dicts, lists and tuples) with every tensor copied to the CPU, so a
    file written on a GPU loads on any machine."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save_policy(model: ActorCritic, path: Path, config: dict) -> None:
    atomic_torch_save({"kwargs": model.kwargs, "state_dict": on_cpu(model.state_dict()),
                       "config": config}, path)


def load_policy(path: Path, device: torch.device | str = "cpu") -> tuple[ActorCritic, dict]:
    """Model (on ``device``) and training config dict from a ``policy.pt`` (tensors are read
    onto the CPU first, whatever device wrote them); one-line error if unreadable."""
    path = Path(path)
    if not path.exists():
        raise PolicyFileError(f"policy file '{path}' is missing; train the run to the end "
                              "or resume it")
    try:
        data = safe_torch_load(path)
        kwargs, weights = data["kwargs"], data["state_dict"]
        with torch.device("meta"):  # sizes first: a crafted file cannot make us allocate more
            probe = ActorCritic(**kwargs)  # than the weights it holds
        if {k: v.shape for k, v in probe.state_dict().items()} != \
                {k: getattr(v, "shape", None) for k, v in weights.items()}:
            raise ValueError("weights do not fit the stored model sizes")
        model = ActorCritic(**kwargs)
        model.load_state_dict(weights)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise PolicyFileError(f"policy file '{path}' is corrupt ({type(exc).__name__}); "
                              "retrain or resume the run") from None
    return model.to(device), data["config"]
