"""The fallible expert (the offline planner with injected herding errors, a stress test of the
critic) and the no-filter ablation's team (the same team, one round)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from relied.agents.clients import ModelError, chat_card, check_spec, describe, make_client
from relied.agents.fallible import HERDING_MARK, FallibleOfflineClient, herding_agents
from relied.agents.generate import generate_demonstrations, plan_scenario
from relied.agents.plans import JointPlan, validate_routes
from relied.agents.team import TeamConfig
from relied.agents.view import CityView
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig
from relied.experts.demos import load_batch

PASS = TeamConfig(bound=BoundConfig(epsilon=2.0))  # the offline plans pass in round 1


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def crowd(net, n: int, gap_s: float, seed: int) -> Scenario:
    """``n`` vehicles of one OD pair leaving ``gap_s`` apart: a small congested case."""
    one = Scenario(n_agents=1, seed=seed).resolve(net)
    return one.model_copy(update={"n_agents": n, "origins": one.origins * n,
                                  "destinations": one.destinations * n,
                                  "departures_s": [gap_s * i for i in range(n)]})


def test_spec_names_what_it_is(aguas):
    spec = "offline-fallible:0.3"
    assert check_spec(spec) == spec
    assert describe(spec).endswith("with injected herding errors, p=0.3")
    assert "not an LLM" in describe(spec)
    card = chat_card(spec)
    assert card.spec == spec and card.digest != chat_card("offline").digest
    client = make_client(spec, aguas, seed=5)
    assert isinstance(client.inner, FallibleOfflineClient)
    assert (client.inner.p, client.inner.seed) == (0.3, 5)
    assert not client.split_turns  # answers like the offline planner: one structured turn
    client = make_client("offline-fallible:0.8:freeflow", aguas, seed=5)
    assert (client.inner.p, client.inner.kind) == (0.8, "freeflow")
    assert describe("offline-fallible:0.8:freeflow").endswith("errors (freeflow), p=0.8")
    for bad in ("offline-fallible:abc", "offline-fallible:1.5", "offline-fallible:",
                "offline-fallible:0.3:sideways"):
        with pytest.raises(ModelError, match="offline-fallible"):
            check_spec(bad)


def test_the_error_rate_is_honoured_seeded_and_redrawn_on_a_retry(aguas):
    groups = [list(range(k, k + 5)) for k in range(0, 4000, 5)]  # 800 group plans

    def draws(p: float, seed: int, round_: int) -> np.ndarray:
        c = FallibleOfflineClient(aguas, p=p, seed=seed)
        return np.array([c.draw("run-v0", g, round_) is not None for g in groups])

    first = draws(0.3, 7, 1)
    assert first.mean() == pytest.approx(0.3, abs=0.045)  # 3 sigma at n=800
    assert draws(0.7, 7, 1).mean() == pytest.approx(0.7, abs=0.045)
    assert np.array_equal(first, draws(0.3, 7, 1))  # seeded: the same draws again
    assert not np.array_equal(first, draws(0.3, 8, 1))
    assert not draws(0.0, 7, 1).any() and draws(1.0, 7, 1).all()
    # a re-prompt (round 2) draws again: most groups that erred in round 1 do not err again
    again = draws(0.3, 7, 2)[first]
    assert again.mean() == pytest.approx(0.3, abs=0.12)
    kinds = {FallibleOfflineClient(aguas, p=1.0, seed=7).draw("run-v0", g, 1)
             for g in groups[:50]}
    assert kinds == {"freeflow"}  # without a forecast the herd takes the free-flow route


def test_a_herding_plan_is_valid_and_herds(aguas):
    """Every agent of a crowd on the same route (the planner spreads it); the plan passes
    the same validation as any plan."""
    sc = crowd(aguas, 20, 1.0, seed=12)
    one = TeamConfig(max_rounds=1)
    herd, _, core = asyncio.run(plan_scenario(sc, model="offline-fallible:1.0", config=one))
    good, _, _ = asyncio.run(plan_scenario(sc, model="offline", config=one))
    plan = JointPlan.model_validate_json(herd.plan.model_dump_json())
    assert herding_agents(plan) == list(range(20))
    assert all(p.rationale.startswith(HERDING_MARK) for p in plan.plans)
    view = CityView(aguas)
    routes = validate_routes(plan.plans, view, core.origin.tolist(), core.dest.tolist())
    assert len({tuple(r) for r in routes}) == 1  # the herd
    assert len({tuple(r) for r in good.routes}) > 1  # the planner spreads the crowd
    assert herd.verdict.kind != "invalid-plan"
    assert herd.verdict.mean_travel_time > good.verdict.mean_travel_time
    assert herding_agents(good.plan) == []


def test_p0_is_the_offline_planner(aguas):
    sc = Scenario(city="aguascalientes", n_agents=15, seed=4)
    a, _, _ = asyncio.run(plan_scenario(sc, model="offline-fallible:0", config=PASS))
    b, _, _ = asyncio.run(plan_scenario(sc, model="offline", config=PASS))
    assert a.routes == b.routes and a.verdict.accepted == b.verdict.accepted


def test_the_critic_rejects_herding_more_often_than_the_planners_plan(aguas):
    """Small congested cases (crowds of 20 leaving 1 s apart, first round judged): the
    critic rejects the herding plan in more cases than the planner's plan (measured 5/5
    against 4/5: the planner's plan is often the reference itself, a tie)."""
    one = TeamConfig(max_rounds=1)
    rejected = {"offline": 0, "offline-fallible:1.0": 0}
    for seed in range(11, 16):
        sc = crowd(aguas, 20, 1.0, seed)
        for spec in rejected:
            out, _, _ = asyncio.run(plan_scenario(sc, model=spec, config=one))
            rejected[spec] += not out.verdict.accepted
    assert rejected["offline-fallible:1.0"] > rejected["offline"]


def test_injections_are_recorded_in_the_demonstrations(tmp_path):
    sc = Scenario(city="aguascalientes", n_agents=15, seed=4)
    path = generate_demonstrations(sc, tmp_path / "d", model="offline-fallible:1.0",
                                   config=TeamConfig(max_rounds=2, bound=BoundConfig(
                                       epsilon=2.0)))[0]
    _, meta = load_batch(path)
    assert meta.model_spec == "offline-fallible:1.0"
    assert meta.extra["model"].endswith("p=1") and "not an LLM" in meta.extra["model"]
    assert meta.extra["herding_agents"] == 15
    assert [i["round"] for i in meta.extra["injected"]] == list(range(1, meta.rounds + 1))
    assert all(i["agents"] == 15 for i in meta.extra["injected"])


def test_nofilter_gets_the_same_team_and_the_same_demonstrations(tmp_path):
    """Where the planner's first plan is accepted, reled (filter) and reled-nofilter (no
    filter) get identical demonstrations: the same planner groups (3 at 30 agents; one
    round's prompt budget would give 1) and the same first plan."""
    sc = Scenario(city="aguascalientes", n_agents=30, seed=4)
    [kept] = generate_demonstrations(sc, tmp_path / "reled", config=PASS)
    [used] = generate_demonstrations(sc, tmp_path / "nofilter", config=PASS,
                                     filter_by_bound=False)
    (ta, ma), (tb, mb) = load_batch(kept), load_batch(used)
    assert ma.accepted and ma.extra["accepted_round"] == 1 and mb.accepted
    assert ma.extra["groups"] == mb.extra["groups"] == 3
    assert ma.extra["max_rounds"] == 3 and mb.extra["max_rounds"] == 1
    assert ma.routes == mb.routes
    for name in ("obs", "action", "cum", "mask", "returns"):
        assert np.array_equal(getattr(ta, name), getattr(tb, name))


def test_nofilter_uses_the_first_plan_as_is(aguas, tmp_path):
    strict = TeamConfig(max_rounds=3, bound=BoundConfig(epsilon=1e-6))  # nothing passes
    sc = Scenario(city="aguascalientes", n_agents=30, seed=4)
    [used] = generate_demonstrations(sc, tmp_path / "n", config=strict, filter_by_bound=False)
    [fell] = generate_demonstrations(sc, tmp_path / "f", config=strict)
    _, mn = load_batch(used)
    _, mf = load_batch(fell)
    assert not mn.accepted and mn.rounds == 1 and not mn.extra["fallback"]
    assert mf.rounds == 3 and mf.extra["fallback"]
    assert mn.extra["groups"] == mf.extra["groups"]
    first = RoutingCore(aguas, sc).scenario  # the same resolved scenario
    assert mn.scenario == mf.scenario == first
