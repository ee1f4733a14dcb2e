"""Demonstrations: stored batches, the cache (zero model calls on a rerun), LEED mode."""

import numpy as np
import pytest

from relied.agents.generate import generate_demonstrations
from relied.agents.offline import OfflinePlannerClient
from relied.agents.team import TeamConfig
from relied.env.cities import load_city
from relied.env.core import SLOT_FEATURES
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig, uniform_probs
from relied.experts.critic import recheck_batch
from relied.experts.demos import list_batches, load_batch
from relied.experts.learners import Learners

SC = Scenario(city="aguascalientes", n_agents=15, seed=4)
# tests about storage and caching: a threshold the offline plans pass in round 1
PASS = TeamConfig(bound=BoundConfig(epsilon=2.0))


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Private expert cache; counts offline model calls."""
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = OfflinePlannerClient.create

    async def create(self, messages, **kw):
        calls.append(len(messages))
        return await real(self, messages, **kw)

    monkeypatch.setattr(OfflinePlannerClient, "create", create)
    return calls


def test_batches_are_stored_and_load_for_training(counted, tmp_path):
    paths = generate_demonstrations(SC, tmp_path / "demos", batches=2, config=PASS)
    assert len(paths) == 2 and all(p.suffix == ".json" for p in paths)
    assert list_batches(tmp_path / "demos") == sorted(paths)
    net = load_city("aguascalientes")
    for p in paths:
        rows, meta = load_batch(p)
        assert meta.accepted and meta.source == "expert-team" and meta.model_spec == "offline"
        assert "not an LLM" in meta.extra["model"]
        assert meta.verdict["accepted"] and meta.rounds >= 1 and meta.transcript
        assert rows.returns.shape == (15,) and rows.action.shape == rows.cum.shape
        # the stored actions drive each agent along its stored route
        for i, route in enumerate(meta.routes):
            nodes = index_of(net, route)
            assert nodes[0] == index_of(net, [meta.scenario.origins[i]])[0]
            assert nodes[-1] == index_of(net, [meta.scenario.destinations[i]])[0]
        assert meta.metrics["mean_travel_time"] > 0
    a, b = (load_batch(p)[1].routes for p in paths)
    assert a != b  # variant 1 is a different plan of the same scenario
    assert load_batch(paths[0])[1].scenario == load_batch(paths[1])[1].scenario
    assert len(counted) == 2


def test_rerun_is_answered_from_the_cache(counted, tmp_path):
    first = generate_demonstrations(SC, tmp_path / "a", config=PASS)
    n_calls = len(counted)
    assert n_calls >= 1
    again = generate_demonstrations(SC, tmp_path / "b", config=PASS)
    assert len(counted) == n_calls  # zero model calls
    (ta, ma), (tb, mb) = load_batch(first[0]), load_batch(again[0])
    assert mb.extra["cached"] and mb.model_calls == 0 and ma.routes == mb.routes
    assert np.array_equal(ta.action, tb.action) and np.array_equal(ta.obs, tb.obs)
    # a different prompt (behaviour shown) is a new request
    generate_demonstrations(SC, tmp_path / "c", behaviour={0: mb.routes[0]}, config=PASS)
    assert len(counted) > n_calls


def test_filtering_by_the_bound_and_leed_mode(counted, tmp_path):
    strict = TeamConfig(max_rounds=2, bound=BoundConfig(epsilon=1e-6))  # nothing can pass
    # no plan passed: the lowest-bound plan is saved, marked as a fallback, not accepted
    fell = generate_demonstrations(SC, tmp_path / "f", config=strict)
    assert len(fell) == 1
    _, meta = load_batch(fell[0])
    assert not meta.accepted and meta.extra["fallback"] and not meta.verdict["accepted"]
    assert meta.rounds == 2 and meta.extra["accepted_round"] is None
    assert meta.verdict["violating_agents"] and meta.verdict["epsilon"] < 1.0
    # a plan that passes is not a fallback
    _, ok = load_batch(generate_demonstrations(SC, tmp_path / "ok", config=PASS)[0])
    assert ok.accepted and not ok.extra["fallback"]
    leed = generate_demonstrations(SC, tmp_path / "l", filter_by_bound=False, config=strict)
    _, meta = load_batch(leed[0])
    assert not meta.accepted and meta.rounds == 1 and meta.extra["max_rounds"] == 1


def test_policy_probs_enter_the_bound(counted, tmp_path):
    seen = []

    def learner(obs, mask, ids):
        seen.append((obs.dtype, mask.shape[1] == (obs.shape[1] - 4) // SLOT_FEATURES + 1,
                     ids.max()))
        return mask / mask.sum(1, keepdims=True)

    def greedy(obs, mask, ids):  # all mass on the first valid action
        probs = np.zeros(mask.shape)
        probs[np.arange(len(mask)), mask.argmax(1)] = 1.0
        return probs

    first = generate_demonstrations(SC, tmp_path / "p", config=PASS)
    assert load_batch(first[0])[1].extra["bound"]["version"] == 4  # no trial update
    paths = generate_demonstrations(SC, tmp_path / "p", learners=Learners(learner), config=PASS)
    _, meta = load_batch(paths[0])
    assert seen and all(d == np.float32 and ok and top < 15 for d, ok, top in seen)
    assert not meta.extra["cached"]  # the learners changed: no cached verdict
    # the trainer recomputes the bound of a stored batch as its policies change
    stored = load_batch(first[0])[1].verdict["bounds"]
    again = recheck_batch(first[0])
    assert again.bounds == pytest.approx([stored[str(i)] for i in range(15)])
    assert recheck_batch(first[0], Learners(learner)).bounds == pytest.approx(again.bounds)
    # another current policy changes the divergence term, the previous policy adds its step
    moved = np.array(recheck_batch(first[0], Learners(greedy)).divergence_terms)
    assert not np.allclose(moved, again.divergence_terms)
    stepped = np.array(recheck_batch(first[0], Learners(greedy, uniform_probs)
                                     ).divergence_terms)
    assert (stepped >= moved).all() and (stepped > moved).sum() >= 2
    # the learners' gamma sets the scale: a shorter horizon gives smaller bounds
    assert max(recheck_batch(first[0], gamma=0.9).bounds) < max(again.bounds)
