"""The core's fast paths give what the reference computation gives: slot masks read from the
per-edge table (``RoutingCore._slot_mask``) equal the mask formula at every decision, and the
remembered free-flow choices of background vehicles leave every result bit for bit the same
as choosing afresh each time."""

from __future__ import annotations

import numpy as np
import pytest

import relied.env.core as core_module
import relied.env.live as live_module
from relied.env.cities import load_city
from relied.env.core import AT_NODE, RoutingCore, slot_mask
from relied.env.policies import make_policy
from relied.env.scenario import Scenario


@pytest.mark.parametrize("city,policy", [("west-oakland", "random"),
                                         ("aguascalientes", "shortest-path")])
def test_table_masks_are_the_formulas_at_every_decision(city, policy):
    """Every vehicle deciding (learners, background, at origins and after an edge; dead ends
    on west-oakland) gets the formula's mask from the table, and ``deciding_mask`` gives the
    rows of ``action_mask``."""
    net = load_city(city)
    core = RoutingCore(net, Scenario(city=city, n_agents=40, seed=5, background_share=0.5,
                                     departure_window_s=120.0, horizon_s=900.0))
    pol = make_policy(policy, 5)
    checked = origins = 0
    while not core.done:
        act = core.active
        deciding = act[core.v_status[act] == AT_NODE]
        reference = slot_mask(net, core.out_table, core.v_node[deciding], core.v_edge[deciding])
        assert np.array_equal(core._slot_mask(deciding), reference)
        learners, valid = core.deciding_mask()
        assert np.array_equal(valid, core.action_mask()[learners, : core.k])
        checked += deciding.size
        origins += int(np.count_nonzero(core.v_edge[deciding] < 0))
        core.advance(pol(core))
    assert checked > 200 and 0 < origins < checked


def _episode(net, scenario: Scenario) -> list[np.ndarray]:
    core = RoutingCore(net, scenario, record_traversals=True)
    pol = make_policy("congestion-aware", 0)
    out = []
    while not core.done:
        out += list(core.advance(pol(core)))
    out += [core.v_arrival, core.clock_s, core.traversal_s]
    out += [np.concatenate(x) for x in zip(*core.traversals, strict=True)]
    return out, core


def test_remembered_free_flow_choices_change_nothing(monkeypatch):
    """A loaded episode whose background routes by free-flow shortest path gives the same
    rewards, clocks and traversals, bit for bit, with the choices remembered per (destination,
    node) and computed afresh at every decision (memory capped to none)."""
    net = load_city("aguascalientes")
    scenario = Scenario(n_agents=60, seed=3, background_share=0.9, departure_window_s=240.0,
                        horizon_s=1200.0, signals=True)
    fast, core = _episode(net, scenario)
    assert core._ff_slot is not None and np.count_nonzero(core._ff_slot >= 0) > 100
    monkeypatch.setattr(core_module, "FF_MEMO_MAX", 0)
    slow, core = _episode(net, scenario)
    assert core._ff_slot is None
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _congestion_aware_run(net, scenario: Scenario) -> tuple[list[np.ndarray], int]:
    """Every step's actions and the live destinations the congestion-aware policy computed."""
    computed = []
    real = live_module.cost_to_go

    def spy(net, targets, weight=None, reverse=None):
        computed.append(len(targets))
        return real(net, targets, weight, reverse)

    live_module.cost_to_go = spy
    try:
        core = RoutingCore(net, scenario)
        pol = make_policy("congestion-aware", 0)
        actions = []
        while not core.done:
            actions.append(pol(core))
            core.advance(actions[-1])
    finally:
        live_module.cost_to_go = real
    return actions, sum(computed)


def test_signal_floor_settles_more_choices_and_changes_none(monkeypatch):
    """With signals every edge costs at least free flow plus its mean red wait, so the
    congestion-aware bounds use that floor: the same choices at every step as on the
    free-flow floor, with fewer destinations computed (the floor's own included)."""
    net = load_city("aguascalientes")
    scenario = Scenario(n_agents=300, seed=2, departure_window_s=300.0, signals=True)
    got, with_floor = _congestion_aware_run(net, scenario)
    free_flow = RoutingCore._cost_floor

    def free_flow_floor(core):
        free_flow(core)
        return core._floors[-1]

    monkeypatch.setattr(RoutingCore, "_cost_floor", free_flow_floor)
    ref, without = _congestion_aware_run(net, scenario)
    assert len(got) == len(ref)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
    assert with_floor < 0.85 * without


@pytest.mark.parametrize("signals,departures", [(True, 30.0), (False, 1.0)])
def test_floor_paths_settle_light_load_choices_and_change_none(monkeypatch, signals, departures):
    """At light load few edges cost more than their floor, so the congestion-aware choice is
    mostly certain from the floor's own paths (the floor cost-to-go plus the rises near them
    above, the floor below) without any live row: the same choices at every step as without
    that shortcut (then every choice goes through the old rows' bounds and fresh rows), with
    far fewer destinations computed. ``departures``: seconds between departures (1 s: a run
    whose queues build, where the shortcut settles fewer)."""
    net = load_city("aguascalientes")
    n = 60 if departures > 1 else 300
    scenario = Scenario(n_agents=n, seed=4, departure_window_s=n * departures, signals=signals,
                        horizon_s=n * departures + 1800.0)
    got, with_floor = _congestion_aware_run(net, scenario)

    def unsure(self, cost, floor, rows, edges, valid, lower):
        return np.zeros(edges.shape[0], dtype=bool), np.zeros(edges.shape[0], dtype=np.int64)

    monkeypatch.setattr(live_module.LiveCostToGo, "_floor_choice", unsure)
    ref, without = _congestion_aware_run(net, scenario)
    assert len(got) == len(ref)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
    assert with_floor < (0.3 if departures > 1 else 0.8) * without


def test_straight_line_bound_narrows_the_floor_ball_and_changes_no_choice(monkeypatch):
    """A raised edge adds to a floor path's bound only where its tail can lie on that path:
    no nearer the head in floor time than the straight-line distance at the network's fastest
    pace (:meth:`LiveCostToGo._pace`). On a loaded run this settles more choices (fewer
    destinations computed) than counting every raised edge no farther from the destination
    (pace 0), with the same choices at every step."""
    net = load_city("aguascalientes")
    scenario = Scenario(n_agents=300, seed=4, departure_window_s=300.0, signals=True)
    got, narrow = _congestion_aware_run(net, scenario)
    monkeypatch.setattr(live_module.LiveCostToGo, "_pace", lambda self, floor: 0.0)
    ref, wide = _congestion_aware_run(net, scenario)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
    assert narrow < 0.85 * wide
