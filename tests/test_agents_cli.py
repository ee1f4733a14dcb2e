"""CLI: relied experts generate/ask/chat and relied models."""

import json

import pytest
from ollama_stub import OllamaStub
from typer.testing import CliRunner

from relied.cli import app
from relied.experts.demos import load_batch

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def test_generate_json_summary(tmp_path):
    args = ["experts", "generate", "--agents", "20", "--scenarios", "2", "--out",
            str(tmp_path / "d"), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("plans", "accepted_first_round", "accepted_within_two_rounds", "model_calls",
                "mean_travel_time", "shortest_path_mean_travel_time"):
        assert key in out
    assert out["plans"] == 2 and out["model_calls"] >= 2 and "not an LLM" in out["model_label"]
    assert 0 < out["mean_travel_time"] < 1.1 * out["shortest_path_mean_travel_time"]
    seeds = sorted(load_batch(p)[1].scenario.seed for p in out["saved"])
    assert seeds == [0, 1]
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["model_calls"] == 0 and again["cached"] == 2


def test_ask_and_chat():
    res = runner.invoke(app, ["experts", "ask", "why did agent 3 take this route?",
                              "--agents", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["answer"].startswith("Agent 3 drives") and out["accepted"]
    res = runner.invoke(app, ["experts", "chat", "--agents", "8"],
                        input="verdict\nwhy agent 2?\nreplan\nquit\n")
    assert res.exit_code == 0, res.output
    assert "accepted in round 1" in res.stdout and "Agent 2 drives" in res.stdout
    assert "new plan (variant 1)" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["experts", "generate", "--city", "atlantis"], "unknown city 'atlantis'"),
    (["experts", "generate", "--model", "gpt-4"], "unknown model spec 'gpt-4'"),
    (["experts", "ask", " "], "the question is empty"),
    (["experts", "generate", "--model", "ollama:x", "--ollama-host", "http://127.0.0.1:9"],
     "Ollama is not reachable"),
])
def test_bad_input_is_one_clear_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_models_lists_or_says_offline():
    with OllamaStub([], models=("qwen2.5:7b",)) as stub:
        res = runner.invoke(app, ["models", "--ollama-host", stub.host, "--json"])
        host = stub.host
    out = json.loads(res.stdout)
    assert out["reachable"] and out["models"] == ["qwen2.5:7b"]
    assert out["details"]["qwen2.5:7b"]["parameter_size"] == "1B"
    assert "tools" in out["details"]["qwen2.5:7b"]["capabilities"]
    res = runner.invoke(app, ["models", "--ollama-host", host])
    assert res.exit_code == 0 and "not reachable" in res.stdout and "offline planner" in res.stdout
