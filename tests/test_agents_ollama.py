"""The Ollama path: autogen-ext's real Ollama client against a local Ollama-protocol server
that enforces what Ollama enforces (tests/ollama_stub.py)."""

import asyncio
import time

import pytest
from autogen_core.models import AssistantMessage, SystemMessage, UserMessage
from ollama_stub import DROP, Fail, OllamaStub

from relied.agents.clients import GuardedClient, ModelError, list_ollama_models, resolve_spec
from relied.agents.generate import agenerate, plan_scenario
from relied.agents.offline import OfflinePlannerClient
from relied.agents.team import MAX_TOOL_ROUNDS
from relied.env.cities import load_city
from relied.env.scenario import Scenario

SCENARIO = Scenario(city="west-oakland", n_agents=4, min_trip_m=200, seed=1)
ROLES = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
NO_TOOLS = {"stub:latest": ["completion"]}
TOOL = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "shortest_path", "arguments": {"from_ref": "L0", "to_ref": "L1"}}}]}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, tmp_path):
    monkeypatch.setattr(GuardedClient, "backoff_s", 0.01)
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)


@pytest.fixture(scope="module")
def good():
    """A well-behaved model: plans from the request's messages (as an LLM would)."""
    planner = OfflinePlannerClient(load_city("west-oakland"))

    def reply(body: dict) -> str:
        msgs = [ROLES[m["role"]](content=m["content"]) if m["role"] == "system"
                else ROLES[m["role"]](content=m["content"], source="x") for m in body["messages"]
                if m["role"] in ROLES and m.get("content")]
        return planner._plan(msgs).model_dump_json()

    return reply


def _plan(host, **kw):
    kw.setdefault("use_cache", False)
    return asyncio.run(plan_scenario(SCENARIO, "ollama:stub", ollama_host=host, **kw))


def test_good_replies_give_an_accepted_plan(good):
    with OllamaStub([good], capabilities=NO_TOOLS, context_length=12_000) as stub:
        out, cached, _ = _plan(stub.host)
    assert out.verdict.accepted and not cached and out.model_calls == 1
    body = stub.requests[0]
    assert body["model"] == "stub" and body["stream"] is False
    assert body["format"]["title"] == "JointPlan"  # the schema is the output format
    assert not body.get("tools")  # no 'tools' capability: the plain prompt path
    # num_ctx is the model's context from /api/show (capped), not a constant
    assert body["options"] == {"temperature": 0.0, "seed": 1, "num_ctx": 12_000}
    assert "DATA_BEGIN" in body["messages"][1]["content"]
    assert out.usage[0].prompt_tokens > 0 and out.usage[0].wall_s > 0


def test_tool_turns_carry_no_format_and_the_answer_carries_no_tools(good):
    with OllamaStub([lambda b: TOOL, good]) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and out.model_calls == 2
    first, second = stub.requests
    assert {t["function"]["name"] for t in first["tools"]} == {
        "shortest_path", "route_travel_time", "corridor_load"}
    assert not any(r.get("tools") and r.get("format") for r in stub.requests)
    assert stub.refused_tool_calls == 0  # the tool call was not swallowed by a format
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_msgs and '"freeflow_s"' in tool_msgs[0]["content"]
    assert [u.kind for u in out.usage] == ["tools", "tools"]


def test_several_tool_rounds_then_the_structured_answer(good):
    with OllamaStub([lambda b: TOOL] * MAX_TOOL_ROUNDS + [good]) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and len(stub.requests) == MAX_TOOL_ROUNDS + 1
    last = stub.requests[-1]
    assert last["format"]["title"] == "JointPlan" and not last.get("tools")
    assert sum(m["role"] == "tool" for m in last["messages"]) == MAX_TOOL_ROUNDS


def test_a_tool_call_under_a_format_is_refused_and_the_model_asked_again(good):
    """A model that insists on tools in the final turn: the server drops the call (as Ollama
    does under a schema), the guard shows the model its empty reply and the error."""
    replies = [lambda b: TOOL] * (MAX_TOOL_ROUNDS + 1) + [good]
    with OllamaStub(replies) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and stub.refused_tool_calls == 1
    retry = stub.requests[-1]["messages"]
    assert "rejected" in retry[-1]["content"] and retry[-2]["role"] == "assistant"


def test_malformed_reply_is_shown_back_with_the_error(good):
    bad = '{"plans": [{"agent_id": 0}'
    with OllamaStub([lambda b: bad, good], capabilities=NO_TOOLS) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and out.model_calls == 2
    *_, rejected, error = stub.requests[1]["messages"]
    assert rejected == {"role": "assistant", "content": bad}
    assert "not valid JSON for the schema" in error["content"] and "json_invalid" in \
        error["content"]


def test_always_malformed_is_a_clear_error():
    with OllamaStub([lambda b: "Sure! Here is the plan: ..."], capabilities=NO_TOOLS) as stub, \
            pytest.raises(ModelError, match="no valid JointPlan after 3 attempts"):
        _plan(stub.host)
    assert len(stub.requests) == 3


def test_slow_reply_times_out(good):
    def slow(body):
        time.sleep(1.0)
        return good(body)

    with OllamaStub([slow]) as stub, pytest.raises(ModelError, match="did not answer within"):
        _plan(stub.host, timeout_s=0.3)


def test_time_queued_behind_other_requests_does_not_count(good, tmp_path):
    """A serial server and 3 concurrent scenarios: each request takes 0.4 s, the timeout is
    0.7 s; the third request would wait 0.8 s if all were sent at once."""
    def slow(body):
        time.sleep(0.4)
        return good(body)

    jobs = [(SCENARIO.model_copy(update={"seed": s}), 0) for s in (1, 2, 3)]
    with OllamaStub([slow], capabilities=NO_TOOLS, serial=True) as stub:
        results = asyncio.run(agenerate(jobs, tmp_path, "ollama:stub", filter_by_bound=False,
                                        ollama_host=stub.host, timeout_s=0.7, use_cache=False))
    assert len(results) == 3 and len(stub.requests) == 3


@pytest.mark.parametrize("failure, message", [
    (lambda b: Fail(500, "CUDA error: out of memory"), "HTTP 500.*3 times"),
    (lambda b: DROP, "dropped the connection 3 times"),
])
def test_transient_failures_are_retried_then_one_line(good, failure, message):
    with OllamaStub([failure, good], capabilities=NO_TOOLS) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and len(stub.requests) == 2  # one retry was enough
    with OllamaStub([failure], capabilities=NO_TOOLS) as stub, \
            pytest.raises(ModelError, match=message) as info:
        _plan(stub.host)
    assert len(stub.requests) == 3 and "ollama pull" not in str(info.value)


def test_does_not_support_tools_is_not_a_pull_advice():
    refuse = Fail(400, "registry.ollama.ai/library/stub does not support tools")
    with OllamaStub([lambda b: refuse]) as stub, \
            pytest.raises(ModelError, match="does not support tools.*'tools'") as info:
        _plan(stub.host)
    assert "ollama pull" not in str(info.value)


def test_server_down_says_start_ollama():
    with OllamaStub([]) as stub:
        host = stub.host
    with pytest.raises(ModelError, match="not reachable.*ollama serve"):
        _plan(host)
    with pytest.raises(ModelError, match="not reachable"):
        list_ollama_models(host)
    assert resolve_spec("auto", host) == "offline"


def test_missing_model_says_pull_it(good):
    with OllamaStub([good], models=("llama3.2:3b",)) as stub, \
            pytest.raises(ModelError, match="'stub' is not pulled.*ollama pull stub"):
        _plan(stub.host)
    assert stub.requests == []  # checked before any chat request
    with OllamaStub([good], missing_model=True) as stub, \
            pytest.raises(ModelError, match="ollama pull stub"):
        _plan(stub.host)


def test_auto_picks_a_chat_model_never_an_embedding_model():
    caps = {"all-minilm:latest": ["embedding"], "qwen2.5:7b": ["completion", "tools"]}
    with OllamaStub([], models=("all-minilm:latest", "qwen2.5:7b"), capabilities=caps) as stub:
        assert list_ollama_models(stub.host) == ["all-minilm:latest", "qwen2.5:7b"]
        assert resolve_spec("auto", stub.host) == "ollama:qwen2.5:7b"
        with pytest.raises(ModelError, match="cannot chat.*embedding"):
            asyncio.run(plan_scenario(SCENARIO, "ollama:all-minilm", ollama_host=stub.host))
    with pytest.raises(ModelError, match="unknown model spec"):
        resolve_spec("gpt-4")


def test_a_context_too_short_for_one_agent_is_one_clear_error(good):
    with OllamaStub([good], context_length=2048) as stub, \
            pytest.raises(ModelError, match="for one agent needs about .* tokens"):
        _plan(stub.host)
    assert stub.requests == []


def test_cache_key_has_the_model_digest(good):
    with OllamaStub([good], capabilities=NO_TOOLS) as stub:
        _plan(stub.host, use_cache=True)
        _, cached, _ = _plan(stub.host, use_cache=True)
        assert cached and len(stub.requests) == 1
        stub.digests["stub:latest"] = "sha256:re-pulled"
        _, cached, _ = _plan(stub.host, use_cache=True)
    assert not cached and len(stub.requests) == 2


def test_rejected_plans_are_not_cached(good):
    from relied.agents.team import TeamConfig
    from relied.experts.bound import BoundConfig

    strict = TeamConfig(max_rounds=1, bound=BoundConfig(epsilon=1e-6, group="planner"))
    with OllamaStub([good], capabilities=NO_TOOLS) as stub:
        out, _, _ = _plan(stub.host, use_cache=True, config=strict)
        _, cached, _ = _plan(stub.host, use_cache=True, config=strict)
    assert not out.verdict.accepted and not cached and len(stub.requests) == 2
