"""Chat tools: an agent's bound terms as the critic computes them, against its absolute epsilon."""

import asyncio
import json

import numpy as np
import pytest
from autogen_core import CancellationToken

from relied.agents.generate import PlanRequest, plan
from relied.agents.team import TeamConfig
from relied.agents.tools import ChatState, PlanFacts, chat_tools
from relied.env.scenario import Scenario
from relied.experts.bound import TIE_TOLERANCE, BoundConfig

SC = Scenario(city="aguascalientes", n_agents=15, seed=4)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _facts(config: TeamConfig, with_epsilon: bool = True):
    request = PlanRequest(scenario=SC, config=config, use_cache=False)
    outcome, _, core, view = asyncio.run(plan(request))
    v = outcome.verdict
    facts = PlanFacts(core=core, view=view, plan=outcome.plan, routes=outcome.routes,
                      bound=config.bound, verdict_text={"state": "x"},
                      epsilon=v.epsilon if with_epsilon else None)
    return facts, outcome


def _agent_bound(facts: PlanFacts, agent: int) -> dict:
    tool = {t.name: t for t in chat_tools(ChatState(facts))}["agent_bound"]
    return json.loads(asyncio.run(tool.run_json({"agent_id": agent}, CancellationToken())))


def test_agent_bound_is_the_critics_and_compares_with_the_absolute_epsilon():
    config = TeamConfig(bound=BoundConfig(epsilon=1.0))
    facts, outcome = _facts(config)
    v = outcome.verdict
    assert v.accepted and v.epsilon > 10 * config.bound.epsilon  # the ratio is not the threshold
    # the chat's terms are the critic's (plan_bounds on the executed plan)
    assert facts.terms.bound.round(3).tolist() == pytest.approx(
        [v.bounds[i] for i in range(SC.n_agents)])
    answers = [_agent_bound(facts, i) for i in range(SC.n_agents)]
    assert all(a["epsilon"] == pytest.approx(v.epsilon, abs=0.05) for a in answers)
    assert all(a["threshold_ratio"] == 1.0 for a in answers)
    within = [a["within_epsilon"] for a in answers]
    assert within == [v.bounds[i] <= v.epsilon for i in range(SC.n_agents)]
    # accepted: the plan's mean bound fits (at a tie, within the tolerance of a negligible Vol_ext)
    assert np.mean(list(v.bounds.values())) <= v.epsilon * (1 + TIE_TOLERANCE)
    assert not all(within)  # though some agents alone are above it
    a = answers[0]
    assert a["bound"] == pytest.approx(a["external_term"] + a["divergence_term"], abs=0.2)
    # without the verdict's epsilon the facts compute it as the team does
    alone, _ = _facts(config, with_epsilon=False)
    assert alone.threshold == pytest.approx(v.epsilon)


def test_agent_bound_of_a_fallback_plan_names_the_agents_above_epsilon():
    facts, outcome = _facts(TeamConfig(max_rounds=1, bound=BoundConfig(epsilon=1e-6)))
    v = outcome.verdict
    assert outcome.fallback and not v.accepted
    above = [i for i in range(SC.n_agents) if not _agent_bound(facts, i)["within_epsilon"]]
    assert above and set(above) == set(v.violating_agents)
