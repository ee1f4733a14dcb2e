"""A run folder's files, apart from the training algorithm.

``runs/<city>/<algo>/<seed>/<timestamp>/`` holds ``config.json`` (the :class:`TrainConfig`),
``demos/seed-<s>/`` (the expert store of each fixed scenario), ``metrics.csv`` (one row per
iteration), ``tb/`` (TensorBoard), ``checkpoints/ckpt_<iteration>.pt``, and at the end
``policy.pt``, ``summary.json``, ``learning_curve.png`` and ``routes.png``.

Safety (docs/reliability.md): checkpoints are plain tensors and numbers read with
``torch.load(weights_only=True)`` (a pickled object in a run folder is refused, never run);
files are written to unique temporary names and renamed; run folders are created exclusively
(concurrent runs of one city/algo/seed get distinct folders) and locked while a process trains
them; a run that fails before its first checkpoint removes its folder; ``config.json`` records
the city's absolute path and SHA-256, checked on resume and evaluation."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np

from relied.env.cities import CityError, city_source
from relied.rl.checkpoints import checkpoint_files, checkpoint_path
from relied.rl.config import TrainConfig
from relied.rl.policy import atomic_torch_save, safe_torch_load

CSV_FIELDS = ("iteration", "env_steps", "agent_steps", "decisions", "wall_s", "return",
              "mean_travel_time", "p95_travel_time", "arrival_rate", "loss_pg", "loss_v",
              "entropy", "approx_kl", "loss_expert", "expert_nll", "expert_kept", "lambda_mean",
              "dtw_km", "bound_max", "bound_offenders", "demos_regenerated", "demos_fallback",
              "model_calls", "model_prompt_tokens", "model_completion_tokens", "model_wall_s")
CKPT_FORMAT = 2  # plain tensors/numbers only (weights_only=True); 1 was a full pickle


class TrainError(RuntimeError):
    """A run that cannot start or resume; the message is one line."""


class RunFolder:
    """The files of one run: its lock, config, metrics log, checkpoints and summary. It holds
    no training logic: the trainer hands it rows and checkpoint states."""

    def __init__(self, path: Path, created_in: Path | None = None):
        self.path = Path(path)
        #: the runs root, while this process made the folder (it removes a failed new run)
        self.created_in = created_in
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, root: Path, cfg: TrainConfig) -> RunFolder:
        """Create ``root/<city>/<algo>/<seed>/<timestamp>[-k]`` exclusively: concurrent runs
        of the same city, algo and seed get distinct folders."""
        return cls(new_run_dir(root, cfg), created_in=Path(root))

    # ---- lock ---------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold an exclusive lock on the folder while this process trains it."""
        import fcntl

        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise TrainError(f"run folder '{self.path}' is being trained by another process; "
                             "wait for it to end (or resume a copy of the folder)") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard_if_new(self) -> None:
        """Remove the folder if this process made it and it has no checkpoint yet."""
        if self.created_in is not None and not self.checkpoints():
            self.release()
            discard_run_dir(self.path, self.created_in)

    # ---- config -------------------------------------------------------------------------
    def save_config(self, cfg: TrainConfig) -> None:
        cfg.save(self.path / "config.json")

    def load_config(self) -> TrainConfig:
        """The run's :class:`TrainConfig`; :class:`TrainError` when it is missing or corrupt."""
        path = self.path / "config.json"
        if not path.is_file():
            raise TrainError(f"'{self.path}' is not a run folder (no config.json)")
        try:
            return TrainConfig.load(path)
        except (ValueError, OSError) as exc:
            raise TrainError(f"'{path}' is corrupt ({type(exc).__name__}); restore it or "
                             "start a new run") from None

    # ---- checkpoints --------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        return checkpoint_files(self.path)

    def save_checkpoint(self, iteration: int, state: dict, keep: int) -> Path:
        """Write ``state`` (tensors and plain numbers) as the checkpoint of ``iteration``,
        atomically, and keep only the newest ``keep`` checkpoints."""
        path = checkpoint_path(self.path, iteration)
        path.parent.mkdir(exist_ok=True)
        atomic_torch_save({"format": CKPT_FORMAT, **state}, path)
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    @staticmethod
    def load_checkpoint(path: Path) -> dict:
        """A checkpoint's state (only tensors and plain numbers are unpickled); ``ValueError``
        for a file of another format."""
        state = safe_torch_load(path)
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            raise ValueError("unknown checkpoint format")
        return state

    # ---- metrics log and summary --------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def read_metrics(self) -> list[dict[str, float]]:
        return read_metrics(self.path)

    def append_metrics(self, row: dict) -> None:
        """Append one iteration's row (the header first in a new file)."""
        new = not self.metrics_path.exists()
        with open(self.metrics_path, "a", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})

    def truncate_metrics(self, iteration: int) -> None:
        """Drop log rows after ``iteration`` (and a row cut by a kill)."""
        if not self.metrics_path.exists():
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in self.read_metrics():
            if r["iteration"] <= iteration:
                writer.writerow({k: _fmt(r.get(k)) for k in CSV_FIELDS})
        tmp = self.metrics_path.with_name(f".metrics.{os.getpid()}.tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2))


def new_run_dir(root: Path, cfg: TrainConfig) -> Path:
    """Create ``root/<city>/<algo>/<seed>/<timestamp>[-k]`` exclusively (see
    :meth:`RunFolder.create`)."""
    city = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.city).stem if "/" in cfg.city else cfg.city)
    base = Path(root) / city / cfg.algo / str(cfg.seed)
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(10_000):
        run_dir = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise TrainError(f"could not create a run folder under '{base}' (10000 taken)")


def discard_run_dir(run_dir: Path, root: Path) -> None:
    """Remove a run folder that never reached a checkpoint, and its parents up to ``root``
    when they are left empty (``rmdir`` only: folders of other runs are never touched)."""
    run_dir, root = Path(run_dir).absolute(), Path(root).absolute()
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def read_metrics(run_dir: Path, drop_partial_tail: bool = True) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` (empty if absent). A last line without its newline (a write
    cut by a kill) is dropped when ``drop_partial_tail``; any other malformed row raises
    :class:`TrainError` naming the file and line."""
    path = Path(run_dir) / "metrics.csv"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"metrics file '{path}' cannot be read ({type(exc).__name__}); "
                         "move it aside to resume without its log") from None
    lines = text.splitlines(keepends=True)
    if drop_partial_tail and lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("".join(lines)))
    header = next(reader)
    if not {"iteration", "env_steps", "return"} <= set(header) or len(set(header)) != len(header):
        raise TrainError(f"metrics file '{path}' has no valid header (line 1); move it aside "
                         "to resume without its log")
    rows = []
    for line, values in enumerate(reader, start=2):
        try:
            if len(values) != len(header):
                raise ValueError(f"{len(values)} fields for {len(header)} columns")
            rows.append({k: float(v) if v != "" else float("nan")
                         for k, v in zip(header, values, strict=True)})
        except ValueError as exc:
            raise TrainError(f"metrics file '{path}' is corrupt at line {line} ({exc}); delete "
                             "that line (or move the file aside) to resume") from None
    return rows


def check_city(cfg: TrainConfig, run_dir: Path, fix: str) -> None:
    """:class:`TrainError` (ending in ``fix``) unless the run's city source exists and, when
    the run recorded one, has the same SHA-256 as when it was trained."""
    try:
        source = city_source(cfg.city)
    except CityError as exc:
        raise TrainError(f"{str(exc).split(';')[0]} (the city of run '{run_dir}'); "
                         f"{fix}") from None
    digest = source.sha256()
    if cfg.city_sha256 and source.path is not None and digest != cfg.city_sha256:
        raise TrainError(f"city file '{source.path}' changed since run '{run_dir}' was trained "
                         f"(SHA-256 {cfg.city_sha256[:12]}... recorded, {(digest or '')[:12]}"
                         f"... now); {fix}")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)
