"""The Ollama path: autogen-ext's real Ollama client against a local Ollama-protocol server."""

import asyncio
import time

import pytest
from autogen_core.models import AssistantMessage, SystemMessage, UserMessage
from ollama_stub import OllamaStub

from relied.agents.clients import ModelError, list_ollama_models, resolve_spec
from relied.agents.generate import plan_scenario
from relied.agents.offline import OfflinePlannerClient
from relied.env.cities import load_city
from relied.env.scenario import Scenario

SCENARIO = Scenario(city="west-oakland", n_agents=4, min_trip_m=200, seed=1)
ROLES = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


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
    return asyncio.run(plan_scenario(SCENARIO, "ollama:stub", ollama_host=host, use_cache=False,
                                     **kw))


def test_good_replies_give_an_accepted_plan(good):
    with OllamaStub([good]) as stub:
        out, cached, _ = _plan(stub.host)
    assert out.verdict.accepted and not cached and out.model_calls == 1
    body = stub.requests[0]
    assert body["model"] == "stub" and body["stream"] is False
    assert body["format"]["title"] == "JointPlan"  # the schema is the output format
    assert body["options"] == {"temperature": 0.0, "seed": 1, "num_ctx": 16_384}
    assert "DATA_BEGIN" in body["messages"][1]["content"]


def test_planner_can_call_tools_then_plan(good):
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "shortest_path", "arguments": {"from_ref": "L0", "to_ref": "L1"}}}]}
    with OllamaStub([lambda b: call, good]) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and out.model_calls == 2
    assert {t["function"]["name"] for t in stub.requests[0]["tools"]} == {
        "shortest_path", "route_travel_time", "corridor_load"}
    tool_msgs = [m for m in stub.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_msgs and '"freeflow_s"' in tool_msgs[0]["content"]


def test_malformed_reply_is_retried_with_the_error(good):
    with OllamaStub([lambda b: '{"plans": [{"agent_id": 0}', good]) as stub:
        out, _, _ = _plan(stub.host)
    assert out.verdict.accepted and out.model_calls == 2
    retry = stub.requests[1]["messages"][-1]["content"]
    assert "not valid JSON for the schema" in retry


def test_always_malformed_is_a_clear_error():
    with OllamaStub([lambda b: "Sure! Here is the plan: ..."]) as stub, \
            pytest.raises(ModelError, match="no valid JointPlan after 3 attempts"):
        _plan(stub.host)
    assert len(stub.requests) == 3


def test_slow_reply_times_out(good):
    def slow(body):
        time.sleep(1.0)
        return good(body)

    with OllamaStub([slow]) as stub, pytest.raises(ModelError, match="did not answer within"):
        _plan(stub.host, timeout_s=0.3)


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


def test_models_are_listed_and_auto_picks_one():
    with OllamaStub([], models=("qwen2.5:7b", "llama3.2:3b")) as stub:
        assert list_ollama_models(stub.host) == ["llama3.2:3b", "qwen2.5:7b"]
        assert resolve_spec("auto", stub.host) == "ollama:llama3.2:3b"
    with pytest.raises(ModelError, match="unknown model spec"):
        resolve_spec("gpt-4")
