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
    # a ratio the offline plans pass in round 1 (at the default, bound v5 rejects them at 20
    # agents: test_generate_judges_under_the_learners_trial_update)
    args = ["experts", "generate", "--agents", "20", "--scenarios", "2", "--epsilon", "2",
            "--out", str(tmp_path / "d"), "--json"]
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


def _strict(text):
    def refuse(const):
        raise ValueError(f"non-strict JSON constant {const}")

    return json.loads(text, parse_constant=refuse)


def test_rejected_plans_are_listed_saved_as_fallback_and_exit_non_zero(tmp_path):
    # the analytic bound (v5): at 20 agents v6 forecasts (next to) no drift for the offline
    # plan, below even 1e-6 times the reference's, so it passes there; v5's bound rejects
    # every plan at epsilon 1e-6
    strict = ["experts", "generate", "--agents", "20", "--epsilon", "1e-6", "--max-rounds", "1",
              "--bound-version", "5"]
    res = runner.invoke(app, [*strict, "--out", str(tmp_path / "d"), "--json"])
    assert res.exit_code == 1
    out = _strict(res.stdout)
    assert out["accepted"] == 0 and out["fallback"] == 1 and out["mean_travel_time"] is None
    # the lowest-bound plan is saved, marked as a fallback and not accepted
    (saved,) = out["saved"]
    _, meta = load_batch(saved)
    assert not meta.accepted and meta.extra["fallback"]
    assert out["rejected"] and {"agent", "reason", "fallback"} <= set(out["rejected"][0])
    assert out["rejected"][0]["fallback"] and "epsilon" in out["rejected"][0]["reason"]
    assert "accepted no plan" in res.stderr and "1 fallback batch(es)" in res.stderr
    table = runner.invoke(app, [*strict, "--out", str(tmp_path / "t")])
    assert table.exit_code == 1
    assert "rejected (seed 0, variant 0; saved as fallback) agent" in table.stdout
    assert "(1 fallback: no plan passed)" in table.stdout
    # LEED keeps the first plan whatever the critic says: saved, not a fallback, exit 0
    leed = runner.invoke(app, [*strict, "--no-filter", "--out", str(tmp_path / "l"), "--json"])
    assert leed.exit_code == 0, leed.output
    out = _strict(leed.stdout)
    assert out["accepted"] == 0 and out["fallback"] == 0 and len(out["saved"]) == 1
    assert not out["rejected"][0]["fallback"]


def test_accepted_plans_exit_zero(tmp_path):
    res = runner.invoke(app, ["experts", "generate", "--agents", "20", "--epsilon", "2",
                              "--out", str(tmp_path / "d"), "--json"])
    assert res.exit_code == 0, res.output
    out = _strict(res.stdout)
    assert out["accepted"] == 1 and out["fallback"] == 0 and not out["rejected"]
    assert load_batch(out["saved"][0])[1].accepted


@pytest.mark.parametrize("args, message", [
    (["--epsilon", "inf"], "--epsilon: inf is invalid: must be a finite number"),
    (["--epsilon", "-1"], "--epsilon: -1.0 is invalid: must be > 0"),
    (["--agents", "200000"], "--agents: 200000 is invalid: must be <= 100000"),
])
def test_bad_values_name_the_flag_and_the_range(args, message):
    res = runner.invoke(app, ["experts", "generate", *args, "--json"])
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.output
    assert message in _strict(res.stdout)["error"]


def test_malformed_scenario_file_names_file_and_field(tmp_path):
    bad = tmp_path / "sc.json"
    bad.write_text('{"city": "aguascalientes", "n_agents": 0}')
    res = runner.invoke(app, ["experts", "ask", "why agent 1?", "--scenario", str(bad)])
    assert res.exit_code == 2 and f"--scenario {bad}: field 'n_agents'" in res.stderr
    bad.write_text("{not json")
    res = runner.invoke(app, ["experts", "ask", "why agent 1?", "--scenario", str(bad), "--json"])
    assert res.exit_code == 2 and "--scenario" in _strict(res.stdout)["error"]


def test_unwritable_cache_runs_without_caching_with_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(blocker / "experts"))
    res = runner.invoke(app, ["experts", "ask", "why did agent 1 take this route?",
                              "--agents", "8"])
    assert res.exit_code == 0, res.output
    assert "Agent 1 drives" in res.stdout
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "running without caching" in warnings[0]


def test_models_when_the_server_is_not_ollama():
    with OllamaStub([], tags_body=b"<html>It works!</html>") as stub:
        res = runner.invoke(app, ["models", "--ollama-host", stub.host, "--json"])
    assert res.exit_code == 0, res.output
    out = _strict(res.stdout)
    assert not out["reachable"] and "does not answer like Ollama" in out["note"]


def test_a_failed_batch_keeps_the_saved_ones(tmp_path, monkeypatch):
    """Two scenarios on a server that drops every request for the second: one line, exit 2,
    the first scenario's batch is saved."""
    from ollama_stub import DROP
    from test_agents_ollama import ROLES

    from relied.agents.clients import GuardedClient
    from relied.agents.offline import OfflinePlannerClient
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.env.scenario import Scenario

    monkeypatch.setattr(GuardedClient, "backoff_s", 0.01)
    net = load_city("west-oakland")
    planner = OfflinePlannerClient(net)
    second = RoutingCore(net, Scenario(city="west-oakland", n_agents=4, min_trip_m=200, seed=1))
    marker = f'"0":"n{int(second.origin[0])} '

    def reply(body):
        if marker in body["messages"][1]["content"]:
            return DROP
        msgs = [ROLES[m["role"]](content=m["content"]) if m["role"] == "system"
                else ROLES[m["role"]](content=m["content"], source="x")
                for m in body["messages"] if m["role"] in ROLES and m.get("content")]
        return planner._plan(msgs).model_dump_json()

    with OllamaStub([reply], capabilities={"stub:latest": ["completion"]}) as stub:
        res = runner.invoke(app, ["experts", "generate", "--city", "west-oakland", "--agents",
                                  "4", "--scenarios", "2", "--model", "ollama:stub",
                                  "--ollama-host", stub.host, "--out", str(tmp_path / "d"),
                                  "--no-filter", "--json"])
    assert res.exit_code == 2, res.output
    error = _strict(res.stdout)["error"]
    assert "dropped the connection 3 times" in error and "1 batch(es)" in error
    assert len(list((tmp_path / "d").glob("*.json"))) == 1
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


PROMPTS = """
import hashlib, sys
from relied.agents.clients import make_client
from relied.agents.team import ExpertTeam
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
net = load_city("aguascalientes")
view = CityView(net)
digest = hashlib.sha256()
for n in (20, 100):
    core = RoutingCore(net, Scenario(city="aguascalientes", n_agents=n, seed=0))
    team = ExpertTeam(core, view, make_client("offline", net, view))
    for system, task in team.prompts:
        digest.update(system.encode() + task.encode())
print(digest.hexdigest())
"""


def test_prompts_are_byte_identical_across_hash_seeds():
    import os
    import subprocess
    import sys

    digests = set()
    for seed in ("0", "1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "NUMBA_DISABLE_JIT": "1"}
        res = subprocess.run([sys.executable, "-c", PROMPTS], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        digests.add(res.stdout.strip())
    assert len(digests) == 1


def test_the_cache_hits_across_processes(tmp_path):
    import os
    import subprocess
    import sys

    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "NUMBA_DISABLE_JIT": "1",
               "RELIED_EXPERT_CACHE": str(tmp_path / "cache")}
        res = subprocess.run([sys.executable, "-m", "relied.cli", "experts", "generate",
                              "--agents", "20", "--epsilon", "2", "--out",
                              str(tmp_path / f"d{seed}"), "--json"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append(_strict(res.stdout))
    assert outs[0]["cached"] == 0 and outs[0]["model_calls"] == 1
    assert outs[1]["cached"] == 1 and outs[1]["model_calls"] == 0


@pytest.mark.parametrize("tamper", ["key", "node", "version"])
def test_tampered_expert_cache_entries_are_not_trusted(tmp_path, tamper):
    """An entry for another request, with a node outside the network or of another cache
    version is ignored with one warning, and the team is asked again."""
    args = ["experts", "generate", "--agents", "8", "--out", str(tmp_path / "d"), "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    assert first["cached"] == 0
    (entry,) = (tmp_path / "cache").glob("*.json")
    data = json.loads(entry.read_text())
    if tamper == "key":
        data["key"] = "0" * 64
    elif tamper == "version":
        data["version"] = 1
    else:
        data["outcome"]["routes"][0][1] = 42  # not an OSM node of aguascalientes
    entry.write_text(json.dumps(data))
    res = runner.invoke(app, args)
    again = json.loads(res.stdout)
    assert again["cached"] == 0 and again["model_calls"] >= 1
    assert "expert cache entry" in res.stderr and "asking the team again" in res.stderr
    untouched = json.loads(runner.invoke(app, args).stdout)  # the rewritten entry is good
    assert untouched["cached"] == 1
