"""Learning-curve figures of one run and of several runs grouped by algorithm."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = (("return", "mean return per agent"), ("mean_travel_time", "mean travel time (s)"))


def learning_curve(rows: list[dict[str, float]], out: Path, title: str = "") -> Path:
    """Return and travel time against simulator steps of one run."""
    steps = np.array([r["env_steps"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        ax.plot(steps, [r[key] for r in rows], marker=".")
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, out)


def compare_curves(groups: dict[str, list[list[dict[str, float]]]], out: Path,
                   title: str = "") -> Path:
    """Mean and min-max spread over the runs (seeds) of each group, on a common step grid."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in groups.items():
        grid = np.linspace(0, min(r[-1]["env_steps"] for r in runs), 60)
        for ax, (key, label) in zip(axes, PANELS, strict=True):
            ys = np.stack([np.interp(grid, [x["env_steps"] for x in r], [x[key] for x in r])
                           for r in runs])
            line, = ax.plot(grid, ys.mean(0), label=f"{name} ({len(runs)})")
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2, color=line.get_color())
            ax.set_xlabel("env steps")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
