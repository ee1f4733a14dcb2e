"""Matplotlib figures of a city and of the routes driven in an episode."""

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


def plot_routes(core: RoutingCore, routes: list[list[int]], out: Path, title: str = "") -> Path:
    """Draw the network in grey and every driven edge coloured by the slowdown agents met on it
    (travel time / free-flow), line width growing with the number of agents that used it."""
    net = core.net
    seg = np.stack([np.stack([net.lon[net.edge_src], net.lat[net.edge_src]], 1),
                    np.stack([net.lon[net.edge_dst], net.lat[net.edge_dst]], 1)], 1)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.add_collection(LineCollection(seg, colors="#cccccc", linewidths=0.6))
    used = core.entries > 0
    slowdown = np.nan_to_num(core.edge_slowdown(), nan=1.0)
    widths = 0.8 + np.log1p(core.entries[used])
    lines = LineCollection(seg[used], cmap="RdYlGn_r", linewidths=widths)
    lines.set_array(slowdown[used])
    lines.set_clim(1.0, core.scenario.max_slowdown)
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, shrink=0.7, label="travel time / free-flow time")
    if routes:
        o = np.array([r[0] for r in routes])
        d = core.dest
        ax.scatter(net.lon[o], net.lat[o], s=12, c="tab:blue", label="origins", zorder=3)
        ax.scatter(net.lon[d], net.lat[d], s=16, c="black", marker="x", label="destinations",
                   zorder=3)
        ax.legend(loc="lower right", fontsize=8)
    ax.autoscale()
    ax.set_aspect(1.0 / np.cos(np.deg2rad(net.lat.mean())))
    ax.set_title(title or net.name)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.text(0.01, 0.01, ATTRIBUTION, transform=ax.transAxes, fontsize=7, color="#555555")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
