"""The core's idle steps (no vehicle changes state: ``RoutingCore._idle``) only move the clock:
a sparse episode gives the same rewards, observations, metrics and traversals with the fast
path switched off, and the fast path does take most of its steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import make_policy
from relied.env.scenario import Scenario


def _run(core: RoutingCore, policy: str, fast: bool) -> tuple[list, int]:
    idle = core._idle
    taken = []

    def counted(t1: float) -> bool:
        got = fast and idle(t1)
        taken.append(got)
        return got

    core._idle = counted
    pol = make_policy(policy, 1)
    out = [core.reset()]
    while not core.done:
        a = pol(core)
        out += [a, *core.step(a)]
    out.append(json.dumps(core.metrics(), sort_keys=True))
    out += [np.concatenate(x) for x in zip(*core.traversals, strict=True)]
    out.append(core.agent_routes())
    return out, sum(taken)


@pytest.mark.parametrize("policy,signals", [("shortest-path", False),
                                            ("congestion-aware", True), ("random", False)])
def test_idle_steps_change_nothing(policy, signals):
    net = load_city("west-oakland")
    sc = Scenario(city="west-oakland", n_agents=12, seed=4, horizon_s=900.0,
                  departures_s=[40.0 * i for i in range(12)], signals=signals,
                  background_share=0.3)
    runs = {}
    for fast in (True, False):
        core = RoutingCore(net, sc, record_routes=True, record_traversals=True)
        runs[fast] = _run(core, policy, fast)
    (got, idle), (ref, none) = runs[True], runs[False]
    assert none == 0 and idle > 0.3 * core.t  # sparse: many steps are idle
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit (-0.0 too)
        else:
            assert a == b
