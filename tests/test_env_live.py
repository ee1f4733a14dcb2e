"""The live cost-to-go at scale (relied/env/live.py): one reversed graph per episode, and
above PER_STEP_LEARNERS learners each destination's row reused for REUSE_STEPS steps."""

import numpy as np
import pytest

import relied.env.live as live_module
from relied.env.core import AT_NODE, RoutingCore
from relied.env.live import PER_STEP_LEARNERS, REUSE_STEPS, ReverseGraph, cost_to_go, reuse_steps
from relied.env.policies import CongestionAwarePolicy
from relied.env.scenario import Scenario


def test_reverse_graph_gives_the_rebuilt_graphs_cost_to_go(aguas):
    """Writing new costs into the graph built once gives exactly what rebuilding it gives,
    parallel edges included (the cheapest kept)."""
    rng = np.random.default_rng(0)
    reverse = ReverseGraph(aguas)
    targets = np.arange(0, aguas.n_nodes, 7)
    for _ in range(3):
        cost = aguas.freeflow_s * rng.uniform(1.0, 5.0, aguas.n_edges)
        assert np.array_equal(cost_to_go(aguas, targets, cost, reverse),
                              cost_to_go(aguas, targets, cost))


def test_reuse_rule_keeps_small_runs_per_step():
    assert reuse_steps(200) == reuse_steps(PER_STEP_LEARNERS) == 1
    assert reuse_steps(PER_STEP_LEARNERS + 1) == reuse_steps(100_000) == REUSE_STEPS > 1


@pytest.fixture()
def computed(monkeypatch):
    """Every live Dijkstra: (targets, the edge costs it ran on)."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    real = live_module.cost_to_go

    def spy(net, targets, weight=None, reverse=None):
        calls.append((np.asarray(targets).copy(), np.array(weight)))
        return real(net, targets, weight, reverse)

    monkeypatch.setattr(live_module, "cost_to_go", spy)
    return calls


def test_above_the_threshold_a_destination_is_reused_then_renewed(aguas, computed):
    """With more learners than PER_STEP_LEARNERS, a destination's cost-to-go is computed once
    and reused (the very row computed on the costs of that step) until it is REUSE_STEPS steps
    old, then computed again on the new costs; the first edge is priced on current costs."""
    n = PER_STEP_LEARNERS + 200
    core = RoutingCore(aguas, Scenario(n_agents=n, seed=4, departure_window_s=120.0))
    policy = CongestionAwarePolicy()
    born: dict[int, tuple[int, np.ndarray]] = {}  # destination -> (step, costs it ran on)
    needed = renewed = total = 0
    while not core.done and core.t < 3 * REUSE_STEPS:
        cost, to_go, row_of = core.live_to_go()  # the step's observation computed it
        assert np.array_equal(cost, core.edge_travel_time())  # the first edge: now
        for targets, weight in computed:
            total += targets.size
            for d in targets.tolist():
                if d in born:  # never renewed early
                    assert core.t - born[d][0] >= REUSE_STEPS
                    renewed += 1
                born[d] = (core.t, weight)
        computed.clear()
        deciding = np.flatnonzero(core.status == AT_NODE)
        dests = np.unique(core.dest[deciding])
        needed += dests.size
        for d in dests.tolist():
            step, weight = born[d]
            assert core.t - step < REUSE_STEPS
            i = deciding[core.dest[deciding] == d][0]
            assert np.array_equal(to_go[row_of[i]], cost_to_go(aguas, [d], weight)[0])
        core.step(policy(core))
    assert renewed > 0
    assert total < needed / 3  # rows were reused


def test_up_to_the_threshold_every_needed_destination_is_recomputed_every_step(aguas,
                                                                               computed):
    core = RoutingCore(aguas, Scenario(n_agents=200, seed=4, departure_window_s=60.0))
    policy, checked = CongestionAwarePolicy(), 0
    while not core.done and core.t < 60:
        core.live_to_go()
        deciding = np.flatnonzero(core.status == AT_NODE)
        got = np.concatenate([t for t, _ in computed]) if computed else np.zeros(0, int)
        assert np.array_equal(np.sort(got), np.unique(core.dest[deciding]))
        checked += got.size
        computed.clear()
        core.step(policy(core))
    assert checked > 50
