"""Dynamic time warping and the adaptive expert weight ``lambda_i(t)`` of the hybrid loss.

Schedule (iteration ``t``, agent ``i``), clipped to ``[lambda_min, lambda_max]``:

* ``dtw``: ``lambda0 * tanh(d_i / dtw_scale_km) * lambda_decay**t``, ``d_i`` the DTW distance
  (km per step) between agent i's last driven route and its expert route: the further it
  drives from the expert, the more it imitates;
* ``return``: ``lambda0 * sigmoid((G_expert_i - G_i) / return_temp) * lambda_decay**t``: the
  weight shrinks as the agent's return passes the expert's;
* ``fixed``: ``lambda0 * lambda_decay**t`` (LEED's fixed or decaying weight).
"""

from __future__ import annotations

import numpy as np


def dtw(a: np.ndarray, b: np.ndarray) -> float:
    """Dynamic-time-warping distance of two sequences ``(m, d)`` and ``(n, d)`` (or 1-D):
    the smallest sum of Euclidean point distances over monotone alignments of both ends."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("dtw needs two non-empty sequences")
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    m, n = cost.shape
    acc = np.full((m + 1, n + 1), np.inf)
    acc[0, 0] = 0.0
    for s in range(2, m + n + 1):  # anti-diagonals i + j = s depend only on s-1 and s-2
        i = np.arange(max(1, s - n), min(m, s - 1) + 1)
        j = s - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    return float(acc[-1, -1])


def dtw_per_step(a: np.ndarray, b: np.ndarray) -> float:
    """DTW divided by the longer length: a distance per step, comparable across route lengths."""
    return dtw(a, b) / max(len(a), len(b))


def expert_weights(kind: str, iteration: int, *, lambda0: float, lambda_min: float,
                   lambda_max: float, decay: float, dtw_km: np.ndarray | None = None,
                   dtw_scale_km: float = 0.3, agent_return: np.ndarray | None = None,
                   expert_return: np.ndarray | None = None, return_temp: float = 1.0,
                   n: int | None = None) -> np.ndarray:
    """``lambda_i(t)`` for every agent (see the module docstring). Agents without a measured
    distance or return yet (NaN) get the undecayed ``lambda0``."""
    scale = lambda0 * decay ** iteration
    if kind == "fixed":
        if n is None:
            raise ValueError("fixed weights need the number of agents n")
        lam = np.full(n, scale)
    elif kind == "dtw":
        d = np.asarray(dtw_km, dtype=np.float64)
        lam = np.where(np.isnan(d), lambda0, scale * np.tanh(np.nan_to_num(d) / dtw_scale_km))
    elif kind == "return":
        gap = np.asarray(expert_return, dtype=np.float64) - np.asarray(agent_return)
        lam = np.where(np.isnan(gap), lambda0,
                       scale / (1.0 + np.exp(-np.nan_to_num(gap) / return_temp)))
    else:
        raise ValueError(f"unknown weight schedule '{kind}'")
    return np.clip(lam, lambda_min, lambda_max)
