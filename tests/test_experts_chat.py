"""The chat: a conversation that remembers, tools over the plan, streaming, /model, Ctrl-C,
and the real REPL in a terminal (tmux)."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from autogen_core.models import AssistantMessage, SystemMessage, UserMessage
from ollama_stub import OllamaStub
from typer.testing import CliRunner

from relied.agents.offline import OfflinePlannerClient
from relied.cli import app
from relied.env.cities import load_city

runner = CliRunner()
ROLES = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def test_follow_ups_use_the_history_and_the_tools():
    lines = ["why did agent 2 take this route?", "and what is its bound?",
             "which are the 2 slowest agents?", "load from L0 to L1?", "replan",
             "what changed after replan?", "quit"]
    res = runner.invoke(app, ["experts", "chat", "--agents", "12"], input="\n".join(lines))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Agent 2 drives" in out
    assert "Agent 2's stationarity bound is" in out  # "its" = the agent asked about before
    assert out.count("agent ") >= 2 and "The slowest agents: agent" in out
    assert "use corridor L0 -> L1" in out
    assert "new plan (variant 1)" in out and "After the replan (variant 1)" in out


def test_ask_answers_from_tools_with_usage():
    res = runner.invoke(app, ["experts", "ask", "what is the bound of agent 1?", "--agents",
                              "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["answer"].startswith("Agent 1's stationarity bound is")
    assert out["usage"]["calls"] >= 3 and out["usage"]["prompt_tokens"] > 0


def _llm(city):
    """A scripted LLM: plans like the offline planner, answers chat questions by calling
    route_of_agent once, then in words (streamed by the server)."""
    planner = OfflinePlannerClient(load_city(city))

    def reply(body):
        if "traffic planner" in body["messages"][0]["content"]:
            msgs = [ROLES[m["role"]](content=m["content"]) if m["role"] == "system"
                    else ROLES[m["role"]](content=m["content"], source="x")
                    for m in body["messages"] if m["role"] in ROLES and m.get("content")]
            return planner._plan(msgs).model_dump_json()
        if body["messages"][-1]["role"] == "tool":
            route = json.loads(body["messages"][-1]["content"])
            return f"Agent {route['agent']} crosses zones {' '.join(route['zones'])} today."
        return {"content": "", "tool_calls": [{"function": {
            "name": "route_of_agent", "arguments": {"agent_id": 1}}}]}

    return reply


def test_ollama_chat_streams_keeps_history_and_swaps_model():
    city = "west-oakland"
    with OllamaStub([_llm(city)], models=("stub:latest", "other:latest")) as stub:
        res = runner.invoke(app, ["experts", "chat", "--city", city, "--agents", "4",
                                  "--model", "ollama:stub", "--ollama-host", stub.host],
                            input="tell me about agent 1\n/model other\nand again?\nquit\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("Agent 1 crosses zones") == 2
    assert "now answering with LLM other via Ollama" in res.stdout
    chats = [r for r in stub.requests if "traffic planner" not in r["messages"][0]["content"]]
    assert all(r["stream"] for r in chats)  # answers stream
    assert {r["model"] for r in chats} == {"stub", "other"}
    last = chats[-1]["messages"]  # the other model got the whole conversation
    assert any("tell me about agent 1" in str(m.get("content")) for m in last)


def test_a_dropped_connection_does_not_end_the_chat(monkeypatch):
    from ollama_stub import DROP

    from relied.agents.clients import GuardedClient

    monkeypatch.setattr(GuardedClient, "backoff_s", 0.01)
    city = "west-oakland"
    llm = _llm(city)
    state = {"drop": False}  # planning works, answers are cut off

    def reply(body):
        if "traffic planner" not in body["messages"][0]["content"] and state["drop"]:
            return DROP
        return llm(body)

    with OllamaStub([reply]) as stub:
        state["drop"] = True
        res = runner.invoke(app, ["experts", "chat", "--city", city, "--agents", "4",
                                  "--model", "ollama:stub", "--ollama-host", stub.host],
                            input="agent 1?\nverdict\nquit\n")
    assert res.exit_code == 0, res.output
    assert "dropped the connection 3 times" in res.stderr
    assert "accepted in round" in res.stdout and "Traceback" not in res.output


def test_chat_with_stdin_closed_is_one_line():
    res = subprocess.run(["bash", "-c", f"{sys.executable} -m relied.cli experts chat "
                          "--agents 4 0<&-"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert res.returncode == 2, res.stderr
    assert "needs a readable stdin" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_repl_in_a_terminal_streams_and_ctrl_c_cancels_an_answer(tmp_path):
    """The real REPL in tmux against a server that streams slowly; Ctrl-C cancels the answer
    and the next question is answered."""
    city = "west-oakland"
    llm = _llm(city)

    def slow(body):
        reply = llm(body)
        if isinstance(reply, str) and "crosses" in reply:
            reply = reply + " " + "and more words " * 40
        return reply

    session = f"relied-{uuid.uuid4().hex[:8]}"
    with OllamaStub([slow], stream_delay_s=0.1) as stub:
        cmd = (f"cd {tmp_path} && RELIED_EXPERT_CACHE={tmp_path}/c NUMBA_DISABLE_JIT=1 "
               f"{sys.executable} -m relied.cli experts chat --city {city} --agents 4 "
               f"--model ollama:stub --ollama-host {stub.host}")
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                        cmd], check=True)
        try:
            screen = _wait(session, "you>")
            _keys(session, "tell me about agent 1", "Enter")
            _wait(session, "crosses zones")
            _keys(session, "C-c")
            screen = _wait(session, "(answer cancelled)")
            _keys(session, "verdict", "Enter")
            screen = _wait(session, "accepted in round")
            _keys(session, "quit", "Enter")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "Traceback" not in screen


def _keys(session, *keys):
    subprocess.run(["tmux", "send-keys", "-t", session, *keys], check=True)


def _wait(session, text, timeout=90.0):
    end = time.time() + timeout
    screen = ""
    while time.time() < end:
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True).stdout
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"'{text}' did not appear:\n{screen}")
