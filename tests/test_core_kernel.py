"""The compiled kernels (:mod:`relied.env.kernel`) give what the numpy/scipy reference
gives, bit for bit: every step's rewards and every state array, the traversals and routes
recorded, on congested runs that take every branch of the numpy path (ranked admission into
full edges, held queues gated, forced entries, FIFO chains, long queues cut short, waits for
green), and with the congestion-aware policy (the live cost-to-go's compiled Dijkstra, rows
searched only as far as the deciding learners need, and the compiled floor bounds). The
suite runs with ``NUMBA_DISABLE_JIT=1`` (the kernels then run as plain Python, on small
runs); the compiled kernels are checked in a subprocess with the JIT on
(``python tests/test_core_kernel.py`` runs that check)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra

from relied.env.cities import load_city
from relied.env.core import AT_NODE, InvalidActionError, RoutingCore
from relied.env.kernel import cost_to_go_rows
from relied.env.live import ReverseGraph
from relied.env.policies import make_policy
from relied.env.presets import load_preset
from relied.env.scenario import Scenario

STATE = ("v_status", "v_edge", "v_node", "next_edge", "ready_s", "entered_s", "clock_s",
         "head_since", "v_arrival", "_count", "_next_slot", "_blocked_on", "blocked_since",
         "entries", "traversal_s", "active", "_held")


def congested(city: str, signals: bool, n: int = 150) -> Scenario:
    """``2 n`` vehicles (half learners) departing within 30 s: queues spill back at once."""
    return Scenario(city=city, n_agents=n, seed=3, departure_window_s=30.0, signals=signals,
                    background_share=0.5, horizon_s=900.0)


def trace(net, scenario: Scenario, compiled: bool, policy: str) -> tuple[list[str], dict]:
    """A digest of each step's rewards and state, and the episode's records and metrics."""
    core = RoutingCore(net, scenario, record_routes=True, record_traversals=True)
    core.compiled = compiled
    pol = make_policy(policy, 0)
    steps = []
    while not core.done:
        h = hashlib.sha1()
        for a in core.advance(pol(core)):
            h.update(a.tobytes())
        for name in STATE:
            h.update(np.ascontiguousarray(getattr(core, name)).tobytes())
        h.update(repr((core.forced, core._blocking, core.n_arrived, core._left is None,
                       core._entered.tolist())).encode())
        steps.append(h.hexdigest())
    records = [np.concatenate(x) for x in zip(*core.traversals, strict=True)]
    records += [np.concatenate(x) for x in zip(*core.routes, strict=True)]
    end = {"records": hashlib.sha1(b"".join(r.tobytes() for r in records)).hexdigest(),
           "metrics": core.metrics()}
    return steps, end


def branches(net, scenario: Scenario, policy: str, monkeypatch) -> collections.Counter:
    """How often the numpy discharge took each branch the kernel reproduces."""
    hits: collections.Counter = collections.Counter()

    def spy(name, taken):
        real = getattr(RoutingCore, name)

        def wrapped(self, *args):
            out = real(self, *args)
            hits[name] += bool(taken(out, args))
            return out
        monkeypatch.setattr(RoutingCore, name, wrapped)

    spy("_admit", lambda go, a: (go != a[4]).any())  # some entry refused
    spy("_gate", lambda out, a: out[2].size)  # some queue held out
    spy("_cannot_leave", lambda out, a: out is not None)  # long queues cut short
    spy("_fifo", lambda out, a: out[1] is not None and
        np.isfinite(out[0][out[1][0]:][out[1][1]]).any())  # chained departures
    spy("_wait_for_green", lambda out, a: True)
    core = RoutingCore(net, scenario)
    core.compiled = False
    pol = make_policy(policy, 0)
    while not core.done:
        core.advance(pol(core))
    hits["forced"] = core.forced
    return hits


@pytest.mark.parametrize("signals,policy", [(True, "shortest-path"),
                                            (False, "congestion-aware")])
def test_kernel_is_the_numpy_discharge(signals, policy, monkeypatch):
    """The kernel's logic (run as Python here) equals the numpy discharge at every step of a
    congested run that takes each of its branches."""
    net = load_city("west-oakland")
    scenario = congested("west-oakland", signals)
    hits = branches(net, scenario, policy, monkeypatch)
    monkeypatch.undo()
    needed = ["_admit", "_gate", "_cannot_leave", "_fifo", "forced"]
    assert all(hits[b] > 0 for b in needed + ["_wait_for_green"] * signals), hits
    reference, ref_end = trace(net, scenario, False, policy)
    got, end = trace(net, scenario, True, policy)
    assert len(got) == len(reference) > 300
    assert got == reference
    assert end == ref_end


def test_kernel_would_catch_a_wrong_admission(monkeypatch):
    """The comparison fails when the kernel's logic differs: here, storage read one vehicle
    larger (a full edge admits one more)."""
    net = load_city("west-oakland")
    scenario = congested("west-oakland", False, n=100)
    reference, _ = trace(net, scenario, False, "shortest-path")
    import relied.env.kernel as kernel

    real = kernel.discharge_queues

    def roomier(*args):
        args = list(args)
        args[25] = args[25] + 1.0  # storage
        return real(*args)

    monkeypatch.setattr(kernel, "discharge_queues", roomier)
    monkeypatch.setattr("relied.env.core.discharge_queues", roomier)
    got, _ = trace(net, scenario, True, "shortest-path")
    assert got != reference


def _copying(real, index: int):
    """``real`` (a kernel) given a copy of its argument ``index``: its updates of that state
    array are lost (``index`` -1: the kernel's answer negated)."""
    def mutated(*args):
        if index < 0:
            return not real(*args)
        args = list(args)
        args[index] = args[index].copy()
        return real(*args)
    return mutated


@pytest.mark.parametrize("name,index", [("decide", 10),  # blocked_on: a new head stays bound
                                        ("reach_stop_lines", 5),  # clock_s: not moved on
                                        ("held_still", -1),  # retry when not needed
                                        ("decide", 11)])  # ff_slot: nothing remembered
def test_kernels_would_catch_a_wrong_step(name, index, monkeypatch):
    """The comparison fails when the compiled decision or stop-line step differs (each
    state update lost in turn), and passes with the kernels as they are (the one that loses
    only the remembered free-flow slots changes no state: it passes too)."""
    net = load_city("west-oakland")
    scenario = congested("west-oakland", False, n=100)
    reference, ref_end = trace(net, scenario, False, "shortest-path")
    assert trace(net, scenario, True, "shortest-path") == (reference, ref_end)
    import relied.env.kernel as kernel

    monkeypatch.setattr(f"relied.env.core.{name}", _copying(getattr(kernel, name), index))
    got, end = trace(net, scenario, True, "shortest-path")
    if index == 11:
        assert (got, end) == (reference, ref_end)
    else:
        assert got != reference


def test_compiled_decision_refuses_a_masked_action():
    """The compiled decision names the first learner whose action is masked, as the numpy
    path does, and changes nothing."""
    net = load_city("west-oakland")
    scenario = congested("west-oakland", False, n=40)
    messages, states = [], []
    for compiled in (False, True):
        core = RoutingCore(net, scenario)
        core.compiled = compiled
        pol = make_policy("shortest-path", 0)
        while not np.count_nonzero(core.status == AT_NODE):
            core.advance(pol(core))
        actions = pol(core)
        deciding, valid = core.deciding_mask()
        bad = deciding[-1]
        actions[bad] = int(np.flatnonzero(~valid[-1])[0]) if not valid[-1].all() else core.k
        before = [np.copy(getattr(core, name)) for name in STATE]
        with pytest.raises(InvalidActionError) as info:
            core.advance(actions)
        messages.append(str(info.value))
        states.append(all(np.array_equal(b, getattr(core, name), equal_nan=True)
                          for b, name in zip(before, STATE, strict=True)))
    assert messages[0] == messages[1] and states == [True, True]


def dijkstra_mismatches(city: str, trials: int = 60) -> dict:
    """:func:`cost_to_go_rows` against scipy's Dijkstra on ``city``'s reversed graph with
    random weights (some infinite, some zero): full rows must be equal; rows searched until
    some nodes are settled must be equal there and wherever finite, inf elsewhere."""
    net = load_city(city)
    graph = ReverseGraph(net)
    rng = np.random.default_rng(0)
    out = {"full": 0, "partial": 0, "incomplete": 0}
    no = np.zeros(0, dtype=np.int64)
    for trial in range(trials):
        w = net.freeflow_s * rng.uniform(1.0, 5.0, net.n_edges)
        w[rng.integers(0, net.n_edges, 1 + trial % 3)] = [np.inf, 0.0, 0.0][: 1 + trial % 3]
        m = graph.weighted(w)
        targets = rng.choice(net.n_nodes, 4, replace=False).astype(np.int64)
        ref = dijkstra(m, indices=targets)
        rows, complete = cost_to_go_rows(m.indptr, m.indices, m.data, targets, net.n_nodes,
                                         no, no)
        out["full"] += int(not (np.array_equal(rows, ref) and complete.all()))
        need = rng.integers(0, net.n_nodes, (4, 2)).astype(np.int64)
        rows, complete = cost_to_go_rows(m.indptr, m.indices, m.data, targets, net.n_nodes,
                                         np.arange(0, 9, 2), need.ravel())
        known = np.isfinite(rows)
        ok = np.array_equal(rows[known], ref[known]) and \
            np.array_equal(rows[np.arange(4)[:, None], need], ref[np.arange(4)[:, None], need])
        ok &= bool(np.isinf(rows[complete]).sum() == np.isinf(ref[complete]).sum())
        out["partial"] += int(not ok)
        out["incomplete"] += int((~complete).sum())
    return out


def test_compiled_dijkstra_logic_is_scipys():
    """The Dijkstra kernel's logic (run as Python here) gives scipy's rows, bit for bit, and
    rows searched only until their needed nodes are settled are exact there."""
    got = dijkstra_mismatches("west-oakland")
    assert got["full"] == 0 and got["partial"] == 0, got
    assert got["incomplete"] > 0  # (some searches did stop early)


#: runs compared with the JIT on: (preset or city, policy, signals)
COMPILED_CASES = [("west-oakland", "congestion-aware", True),
                  ("aguascalientes", "shortest-path", True),
                  ("monaco", "shortest-path", False),
                  ("monaco", "congestion-aware", True),
                  ("aguascalientes-peak", "congestion-aware", False)]


def compare_compiled() -> list[dict]:
    """Every case of :data:`COMPILED_CASES` with the compiled kernel and with numpy."""
    from relied.env.kernel import COMPILED

    assert COMPILED, "numba's JIT is off"
    out = []
    for name, policy, signals in COMPILED_CASES:
        base = load_preset(name).scenario if name.endswith("-peak") else \
            congested(name, signals, n=300)
        scenario = base.model_copy(update={"signals": signals})
        net = load_city(scenario.city)
        reference, ref_end = trace(net, scenario, False, policy)
        got, end = trace(net, scenario, True, policy)
        out.append({"case": [name, policy, signals], "steps": len(reference),
                    "equal": got == reference and end == ref_end,
                    "forced": ref_end["metrics"]["forced_entries"]})
    out.append({"dijkstra": {c: dijkstra_mismatches(c) for c in ("monaco", "aguascalientes")}})
    return out


def test_compiled_kernel_is_the_numpy_discharge():
    """With numba's JIT on (a subprocess; the suite runs with it off), the compiled kernel
    equals the numpy discharge at every step of congested runs and a peak preset."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                         timeout=900, cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    cases = json.loads(run.stdout.strip().splitlines()[-1])
    rows = cases.pop()["dijkstra"]
    assert all(r["full"] == 0 and r["partial"] == 0 and r["incomplete"] for r in
               rows.values()), rows
    assert [c["case"] for c in cases] == [list(c) for c in COMPILED_CASES]
    assert all(c["equal"] and c["steps"] > 200 for c in cases), cases
    assert sum(c["forced"] for c in cases) > 0


if __name__ == "__main__":
    print(json.dumps(compare_compiled()))
