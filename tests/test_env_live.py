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


def test_up_to_the_threshold_every_needed_destination_is_exact_every_step(aguas, computed):
    """Up to PER_STEP_LEARNERS the rows are those of a Dijkstra on the step's costs; a row is
    computed again only when the costs changed since it was (sparse demand: rarely)."""
    core = RoutingCore(aguas, Scenario(n_agents=40, seed=4, departure_window_s=600.0))
    policy, checked, reused = CongestionAwarePolicy(), 0, 0
    born: dict[int, int] = {}  # destination -> step its row was computed at
    previous, changed_at = None, 0  # the last step's costs, the step they last changed at
    while not core.done and core.t < 400:
        cost, to_go, row_of = core.live_to_go()
        if previous is not None and not np.array_equal(cost, previous):
            changed_at = core.t
        previous = cost
        for targets, _ in computed:
            for d in targets.tolist():
                assert d not in born or born[d] < changed_at  # only on changed costs
                born[d] = core.t
        computed.clear()
        deciding = np.flatnonzero(core.status == AT_NODE)
        for i in deciding.tolist():
            d = int(core.dest[i])
            assert np.array_equal(to_go[row_of[i]], cost_to_go(aguas, [d], cost)[0])
            reused += born[d] < core.t
            checked += 1
        core.advance(policy(core))
    assert checked > 100 and reused > 20


def _reference_choice(core: RoutingCore, deciding: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The congestion-aware choice from a fresh Dijkstra per destination on the step's costs."""
    cost = core.edge_travel_time()
    dests, inv = np.unique(core.dest[deciding], return_inverse=True)
    to_go = cost_to_go(core.net, dests, cost)
    edges = np.maximum(core.out_table[core.node[deciding]], 0)
    via = cost[edges] + to_go[inv[:, None], core.net.edge_dst[edges]]
    return np.argmin(np.where(valid, via, np.inf), axis=1)


@pytest.mark.parametrize("signals", [False, True])
def test_bounded_choices_are_those_of_a_fresh_dijkstra_on_a_congested_run(aguas, computed,
                                                                         signals):
    """live_best_slots settles most choices from bounds (free-flow cost-to-go below, an old
    row plus the cost increases in its ball above) and computes a destination only where they
    leave the choice open; every choice is the one a fresh Dijkstra on the step's costs
    gives, on a run whose queues grow and drain every step."""
    core = RoutingCore(aguas, Scenario(n_agents=300, seed=2, departure_window_s=300.0,
                                       background_share=0.85, signals=signals))
    needed = checked = got = 0
    while not core.done:
        deciding = np.flatnonzero(core.status == AT_NODE)
        actions = np.full(core.n, core.noop, dtype=np.int64)
        if deciding.size:
            valid = core.action_mask()[deciding, : core.k]
            reference = _reference_choice(core, deciding, valid)
            computed.clear()  # (the reference's Dijkstra is not the core's)
            actions[deciding] = core.live_best_slots(deciding, valid)
            got += sum(t.size for t, _ in computed)
            assert np.array_equal(actions[deciding], reference)
            needed += np.unique(core.dest[deciding]).size
            checked += deciding.size
        core.advance(actions)
    assert core.metrics()["delay_ratio"] > 0.4  # congested
    assert checked > 1_000
    assert got < 0.7 * needed  # the bounds settled many destinations


def test_congestion_aware_episode_is_the_fresh_dijkstra_policys(aguas):
    """Same routes and trip times as the congestion-aware policy with a fresh Dijkstra per
    destination every step (what it was before the bounds)."""
    scenario = Scenario(n_agents=400, seed=7, departure_window_s=180.0, background_share=0.5)

    def reference(core):
        actions = np.full(core.n, core.noop, dtype=np.int64)
        deciding = np.flatnonzero(core.status == AT_NODE)
        if deciding.size:
            valid = core.action_mask()[deciding, : core.k]
            actions[deciding] = _reference_choice(core, deciding, valid)
        return actions

    runs = []
    for policy in (CongestionAwarePolicy(), reference):
        core = RoutingCore(aguas, scenario, record_routes=True)
        core.reset()
        while not core.done:
            core.advance(policy(core))
        runs.append((core.agent_routes(), core.travel_times()))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][1].mean() > 1.1 * core.ff_od.mean()
