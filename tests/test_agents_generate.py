"""Demonstrations: stored batches, the cache (zero model calls on a rerun), LEED mode."""

import numpy as np
import pytest

from relied.agents.generate import generate_demonstrations
from relied.agents.offline import OfflinePlannerClient
from relied.env.cities import load_city
from relied.env.scenario import Scenario, index_of
from relied.experts.critic import recheck_batch
from relied.experts.demos import list_batches, load_batch

SC = Scenario(city="aguascalientes", n_agents=15, seed=4)


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
    paths = generate_demonstrations(SC, tmp_path / "demos", batches=2)
    assert len(paths) == 2 and all(p.suffix == ".json" for p in paths)
    assert list_batches(tmp_path / "demos") == sorted(paths)
    net = load_city("aguascalientes")
    for p in paths:
        traj, meta = load_batch(p)
        assert meta.accepted and meta.source == "expert-team" and meta.model_spec == "offline"
        assert "not an LLM" in meta.extra["model"]
        assert meta.verdict["accepted"] and meta.rounds >= 1 and meta.transcript
        assert traj.obs.shape[1] == 15 and traj.action.shape == traj.reward.shape
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
    first = generate_demonstrations(SC, tmp_path / "a")
    n_calls = len(counted)
    assert n_calls >= 1
    again = generate_demonstrations(SC, tmp_path / "b")
    assert len(counted) == n_calls  # zero model calls
    (ta, ma), (tb, mb) = load_batch(first[0]), load_batch(again[0])
    assert mb.extra["cached"] and mb.model_calls == 0 and ma.routes == mb.routes
    assert np.array_equal(ta.action, tb.action) and np.array_equal(ta.obs, tb.obs)
    # a different prompt (behaviour shown) is a new request
    generate_demonstrations(SC, tmp_path / "c", behaviour={0: mb.routes[0]})
    assert len(counted) > n_calls


def test_filtering_by_the_bound_and_leed_mode(counted, tmp_path):
    from relied.agents.team import TeamConfig
    from relied.experts.bound import BoundConfig

    strict = TeamConfig(max_rounds=2, bound=BoundConfig(group="planner"))  # G(i) = all 15
    assert generate_demonstrations(SC, tmp_path / "f", config=strict) == []
    leed = generate_demonstrations(SC, tmp_path / "l", filter_by_bound=False, config=strict)
    _, meta = load_batch(leed[0])
    assert not meta.accepted and meta.rounds == 1 and meta.extra["max_rounds"] == 1


def test_policy_probs_enter_the_bound(counted, tmp_path):
    seen = []

    def learner(obs, mask, ids):
        seen.append((obs.dtype, mask.shape[1] == (obs.shape[1] - 4) // 5 + 1, ids.max()))
        return mask / mask.sum(1, keepdims=True)

    first = generate_demonstrations(SC, tmp_path / "p")
    paths = generate_demonstrations(SC, tmp_path / "p", policy_probs=learner)
    _, meta = load_batch(paths[0])
    assert seen and all(d == np.float32 and ok and top < 15 for d, ok, top in seen)
    assert not meta.extra["cached"]  # the learners changed: no cached verdict
    # the trainer recomputes the bound of a stored batch as its policies change
    stored = load_batch(first[0])[1].verdict["bounds"]
    again = recheck_batch(first[0])
    assert again.bounds == pytest.approx([stored[str(i)] for i in range(15)])
    assert max(recheck_batch(first[0], policy_probs=learner).bounds) == pytest.approx(
        max(again.bounds))
