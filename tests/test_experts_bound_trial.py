"""Bound version 5: the learners' trial update on the plan enters the critic's terms."""

import numpy as np
import pytest
import torch
from test_experts_bound import (  # tests/ on sys.path
    _cell_drift,
    _crowd,
    _crowd_plans,
    _sp_routes,
)

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.rollout import run_episode
from relied.experts.bound import BoundConfig, bound_constants, divergence_between
from relied.experts.critic import (
    CELL_S,
    check_plan,
    execute,
    greedy_cell_times,
    plan_bounds,
)
from relied.rl.config import TrainConfig
from relied.rl.model import ActorCritic
from relied.rl.policy import TrainedPolicy
from relied.rl.trial import probs_of, trial_update


def _learners(core: RoutingCore, seed: int = 0):
    torch.manual_seed(seed)
    model = ActorCritic(core.obs_dim, core.k, core.n)
    cfg = TrainConfig(city="aguascalientes", n_agents=core.n, algo="reled")
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    return model, trial_update(model, optim, cfg, lambda: np.ones(core.n))


def _cell_table(core: RoutingCore) -> dict[int, float]:
    """Mean traversal time per (edge, minute) cell of a finished run, computed here."""
    veh, edge, entered, left = (np.concatenate(x) for x in zip(*core.traversals, strict=True))
    bins = int(core.scenario.horizon_s // CELL_S) + 2
    key = edge.astype(np.int64) * bins + np.minimum(entered // CELL_S, bins - 1).astype(np.int64)
    return {int(k): float((left - entered)[key == k].mean()) for k in np.unique(key)}


def test_trial_terms_are_the_successor_step():
    """With a trial update, D_j is the TV between the learners' current policy and its trial
    successor on the plan's states (about 0.01 after one update's steps, where version 4's
    distance to the plan is about 0.5 for untrained learners), and the external term adds how
    far each agent's cells move when the learners' greedy behaviour takes that step. Replacing
    the trial term by the old divergence, or dropping the move, makes this test fail."""
    net = load_city("aguascalientes")
    n = 16
    sc = _crowd(net, n, gap_s=2.0)
    routes = _sp_routes(net, sc)
    cfg = BoundConfig(executions=3)
    core = RoutingCore(net, sc)
    model, trial = _learners(core)
    current = probs_of(model)
    run = execute(net, sc, routes=routes)
    new = plan_bounds(net, sc, routes, cfg, current, run=run, trial_update=trial)
    old = plan_bounds(net, sc, routes, cfg, current, run=run, scales=new.scales)
    # D_j recomputed from the decision rows and the successor policy
    rows = run.decisions
    successor = trial(rows)
    tv = divergence_between(current(rows.obs, rows.mask, rows.agent),
                            successor(rows.obs, rows.mask, rows.agent))
    d = np.bincount(rows.agent, weights=tv, minlength=n) / np.maximum(
        np.bincount(rows.agent, minlength=n), 1)
    assert 1e-4 < d.mean() < 0.1
    c1, c2 = bound_constants(cfg.gamma, sc.reward_bound)
    inner = np.array([sum(d[j] for j in g if j != i) for i, g in enumerate(new.groups)])
    scaled_div = 50 * c2 * inner / new.scales[1]
    np.testing.assert_allclose(new.divergence, scaled_div, rtol=1e-6, atol=1e-9)
    assert old.divergence.max() > 10 * new.divergence.max() > 0  # v4: distance to the plan
    # the move: greedy runs of the current and successor policies, cells of the plan routes
    check = RoutingCore(net, sc, record_traversals=True)
    run_episode(check, TrainedPolicy(model))  # the trainer's greedy policy, not the critic's
    mine = _cell_table(check)
    now = greedy_cell_times(net, sc, current)
    assert dict(zip(now.cell_keys.tolist(), now.cell_times_s.tolist(), strict=True)) == \
        pytest.approx(mine)
    then = greedy_cell_times(net, sc, successor)
    bins = int(sc.horizon_s // CELL_S) + 2

    def time_of(table, cell):
        hit = np.flatnonzero(table.cell_keys == cell)
        return table.cell_times_s[hit[0]] if hit.size else net.freeflow_s[cell // bins]

    move = np.array([np.mean([abs(time_of(then, c) - time_of(now, c)) for c in cells])
                     for cells in run.agent_cells]) / sc.time_scale_s
    np.testing.assert_allclose(new.move, move, rtol=1e-9)
    assert new.move.max() > 0 and (old.move == 0).all()
    np.testing.assert_allclose(new.absolute - c2 * inner, c1 * (new.volatility + new.move),
                               rtol=1e-9)
    with pytest.raises(ValueError, match="policy_probs"):
        plan_bounds(net, sc, routes, cfg, None, run=run, trial_update=trial)


def test_critic_with_the_trial_discriminates_the_congested_crowd():
    """A small congested case (16 vehicles of one OD pair leaving 2 s apart), judged with
    untrained learners and their trial update: all on the shortest path (the herd; the
    reference) is rejected, plans that spread it over a second path are accepted, and the
    herd's agents' cells drift most when every third agent switches path."""
    net = load_city("aguascalientes")
    n = 16
    sc, sp, second, plans = _crowd_plans(net, n)
    cfg = BoundConfig(executions=3, return_tolerance=10.0)
    model, trial = _learners(RoutingCore(net, sc))
    current = probs_of(model)
    movers = np.arange(n) % 3 == 1
    verdict, drift = {}, {}
    for name, routes in plans.items():
        report, run = check_plan(net, sc, routes, cfg, current, trial_update=trial)
        other = [sp[i] if list(routes[i]) != list(sp[i]) else second for i in range(n)]
        moved = execute(net, sc, routes=[other[i] if movers[i] else routes[i]
                                         for i in range(n)])
        drift[name], verdict[name] = _cell_drift(run, moved, np.flatnonzero(~movers)), report
    assert drift["herd"] > 2 * max(drift["few"], drift["half"])
    assert not verdict["herd"].accepted and "does not lower" in verdict["herd"].reason
    assert verdict["herd"].plan_bound == pytest.approx(verdict["herd"].reference_bound)
    assert verdict["few"].accepted and verdict["half"].accepted
    # the trial entered: the reference's divergence level is the successor step's, not v4's
    v4, _ = check_plan(net, sc, sp, cfg, current)
    assert v4.reference_bound != pytest.approx(verdict["herd"].reference_bound)



def test_the_trial_reads_decision_rows_as_it_read_the_dense_arrays():
    """The trial update on a plan's decision rows (what the critic keeps and a batch stores)
    gives the successor it gave on the plan's dense per-step arrays, bit for bit."""
    net = load_city("aguascalientes")
    sc = _crowd(net, 16, gap_s=2.0)
    core = RoutingCore(net, sc)
    _, trial = _learners(core)
    run = execute(net, sc, routes=_sp_routes(net, sc))
    rows = run.decisions
    for agents in (None, [0, 3, 5, 11]):
        a = trial(rows, agents)(rows.obs, rows.mask, rows.agent)
        b = trial(run.traj, agents)(rows.obs, rows.mask, rows.agent)
        np.testing.assert_array_equal(a, b)
