"""DTW on hand-made sequences and the lambda schedule."""

import numpy as np
import pytest

from relied.rl.schedule import dtw, dtw_per_step, expert_weights

KW = dict(lambda0=1.0, lambda_min=0.05, lambda_max=0.9, decay=0.5)


def test_dtw_identical_and_time_warped_sequences_are_zero():
    assert dtw([0, 1, 2], [0, 1, 2]) == 0.0
    assert dtw([0, 0, 1, 1, 2], [0, 1, 2]) == 0.0


def test_dtw_hand_computed_values():
    # best alignment (0,1)(1,1)(2,2)(2,3): 1 + 0 + 0 + 1
    assert dtw([0, 1, 2], [1, 2, 3]) == pytest.approx(2.0)
    assert dtw([0], [3, 4]) == pytest.approx(7.0)
    a = [[0, 0], [3, 4]]
    b = [[0, 0], [0, 0], [3, 4]]
    assert dtw(a, b) == 0.0
    assert dtw([[0, 0]], [[3, 4]]) == pytest.approx(5.0)
    assert dtw_per_step([0, 1, 2], [1, 2, 3]) == pytest.approx(2.0 / 3)


def test_dtw_matches_brute_force_recursion():
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 2)), rng.random((4, 2))

    def rec(i, j):
        c = np.linalg.norm(a[i] - b[j])
        if i == 0 and j == 0:
            return c
        prev = [rec(i - 1, j) if i else np.inf, rec(i, j - 1) if j else np.inf,
                rec(i - 1, j - 1) if i and j else np.inf]
        return c + min(prev)

    assert dtw(a, b) == pytest.approx(rec(5, 3))
    with pytest.raises(ValueError, match="non-empty"):
        dtw([], [1.0])


def test_dtw_weight_grows_with_distance_decays_and_clips():
    d = np.array([0.0, 0.1, 0.3, 5.0, np.nan])
    lam0 = expert_weights("dtw", 0, dtw_km=d, dtw_scale_km=0.3, **KW)
    assert lam0[0] == 0.05  # clipped up to lambda_min
    assert lam0[1] == pytest.approx(np.tanh(1 / 3))
    assert lam0[2] == pytest.approx(np.tanh(1.0))
    assert lam0[3] == 0.9  # clipped down to lambda_max
    assert lam0[4] == 0.9  # unmeasured: lambda0, clipped
    assert np.all(np.diff(lam0[:4]) >= 0)
    lam2 = expert_weights("dtw", 2, dtw_km=d, dtw_scale_km=0.3, **KW)
    assert lam2[2] == pytest.approx(0.25 * np.tanh(1.0))


def test_return_weight_shrinks_as_agent_passes_expert():
    expert = np.full(3, 2.0)
    agent = np.array([-10.0, 2.0, 10.0])
    lam = expert_weights("return", 0, agent_return=agent, expert_return=expert, return_temp=1.0,
                         lambda0=1.0, lambda_min=0.0, lambda_max=1.0, decay=1.0)
    assert lam[1] == pytest.approx(0.5)
    assert lam[0] > 0.99 and lam[2] < 0.01


def test_fixed_weight_decays_geometrically():
    lam = [expert_weights("fixed", t, n=2, lambda0=0.8, lambda_min=0.0, lambda_max=1.0,
                          decay=0.9)[0] for t in range(3)]
    assert lam == pytest.approx([0.8, 0.72, 0.648])
