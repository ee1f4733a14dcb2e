"""Matplotlib figures of a city: routes coloured by the slowdown met, and queues over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from relied.env.core import RoutingCore  # noqa: E402

ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL"


def _segments(core: RoutingCore) -> np.ndarray:
    net = core.net
    return np.stack([np.stack([net.lon[net.edge_src], net.lat[net.edge_src]], 1),
                     np.stack([net.lon[net.edge_dst], net.lat[net.edge_dst]], 1)], 1)


def _map_axes(ax, core: RoutingCore, title: str) -> None:
    net = core.net
    ax.autoscale()
    ax.set_aspect(1.0 / np.cos(np.deg2rad(net.lat.mean())))
    ax.set_title(title, fontsize=10)
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.tick_params(labelsize=7)
    ax.text(0.01, 0.01, ATTRIBUTION, transform=ax.transAxes, fontsize=6, color="#555555")


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_routes(core: RoutingCore, routes: list[list[int]], out: Path, title: str = "") -> Path:
    """Draw the network in grey and every driven edge coloured by the slowdown vehicles met on
    it (experienced traversal time / free-flow time), wider where more vehicles entered it."""
    seg = _segments(core)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.add_collection(LineCollection(seg, colors="#cccccc", linewidths=0.6))
    used = core.entries > 0
    slowdown = np.nan_to_num(core.edge_slowdown(), nan=1.0)
    lines = LineCollection(seg[used], cmap="RdYlGn_r", linewidths=0.8 + np.log1p(
        core.entries[used]))
    lines.set_array(slowdown[used])
    lines.set_clim(1.0, max(2.0, float(np.percentile(slowdown[used], 95))) if used.any() else 2.0)
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, shrink=0.7, label="travel time / free-flow time")
    if routes:
        net = core.net
        o = np.array([r[0] for r in routes])
        ax.scatter(net.lon[o], net.lat[o], s=12, c="tab:blue", label="origins", zorder=3)
        ax.scatter(net.lon[core.dest], net.lat[core.dest], s=16, c="black", marker="x",
                   label="destinations", zorder=3)
        ax.legend(loc="lower right", fontsize=8)
    _map_axes(ax, core, title or core.net.name)
    return _save(fig, out)


def plot_queues(core: RoutingCore, out: Path, title: str = "", panels: int = 4) -> Path:
    """Queues over time: ``panels`` map snapshots (edges coloured by queued vehicles / storage,
    from a core run with ``record_queues=True``) at evenly spaced times up to the end of the
    run, and below them the number of queued vehicles over time."""
    if not core.queue_history:
        raise ValueError("no queue history: run the core with record_queues=True")
    hist = np.stack(core.queue_history)  # (T, E)
    steps = hist.shape[0]
    times = np.arange(1, steps + 1) * core.scenario.dt_s
    picks = np.unique(np.linspace(0, steps - 1, panels + 2)[1:-1].round().astype(int))
    seg = _segments(core)
    fig = plt.figure(figsize=(4 * len(picks), 6.5))
    grid = fig.add_gridspec(2, len(picks), height_ratios=[3, 1])
    fill_max = 1.0
    lines = None
    for col, step in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        ax.add_collection(LineCollection(seg, colors="#dddddd", linewidths=0.5))
        fill = hist[step] / core.net.storage
        queued = hist[step] > 0
        lines = LineCollection(seg[queued], cmap="inferno_r",
                               linewidths=1.0 + 2.0 * np.minimum(fill[queued], 1.0))
        lines.set_array(fill[queued])
        lines.set_clim(0.0, fill_max)
        ax.add_collection(lines)
        _map_axes(ax, core, f"t = {times[step]:.0f} s, {int(hist[step].sum())} queued")
    if lines is not None:
        fig.colorbar(lines, ax=fig.axes, shrink=0.5, label="queued vehicles / storage")
    ax = fig.add_subplot(grid[1, :])
    ax.plot(times, hist.sum(axis=1), color="tab:red")
    for step in picks:
        ax.axvline(times[step], color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("vehicles queued")
    fig.suptitle(title or f"{core.net.name}: queues over time")
    return _save(fig, out)
