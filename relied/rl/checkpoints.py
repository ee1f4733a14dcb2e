"""Where a run keeps its checkpoints: ``checkpoints/ckpt_<iteration>.pt``, oldest first."""

from __future__ import annotations

import re
from pathlib import Path

CKPT = re.compile(r"ckpt_(\d+)\.pt$")


def checkpoint_files(run_dir: Path) -> list[Path]:
    """The run's checkpoint files ordered by iteration (empty when there are none)."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("ckpt_*.pt") if CKPT.search(p.name)] \
        if folder.exists() else []
    return sorted(found, key=lambda p: int(CKPT.search(p.name).group(1)))


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    """The file of the checkpoint taken at ``iteration``."""
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:06d}.pt"
