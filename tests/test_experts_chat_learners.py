"""``relied experts ask``/``chat`` and the chat tool ``agent_bound`` judge as ``experts
generate`` does: bound version 5, under the learners of ``--run`` or else the seeded untrained
learners of a new run (their trial update), never version 4's terms."""

import asyncio
import json

import pytest
import torch
from autogen_core import CancellationToken
from typer.testing import CliRunner

from relied.agents.chat import ChatSession
from relied.agents.generate import PlanRequest
from relied.agents.tools import chat_tools
from relied.cli import app
from relied.env.core import RoutingCore
from relied.experts.bound import BOUND_VERSION
from relied.experts.learners import NO_TRIAL_VERSION, UNTRAINED
from relied.rl.config import TrainConfig
from relied.rl.trainer import Trainer
from relied.rl.trial import fresh_learners, run_learners

torch.set_num_threads(1)
runner = CliRunner()
AGENT = 3  # agents 0-2 drive alone here (bound 0 under any learners)
QUESTION = f"what is the bound of agent {AGENT}?"


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (6 learners on west-oakland) and its scenario file."""
    root = tmp_path_factory.mktemp("chat-run")
    cfg = TrainConfig(city="west-oakland", n_agents=6, seed=1, experts="shortest-path",
                      train_seeds=1, horizon_s=300, total_steps=600, n_envs=2, minibatch=128,
                      expert_batch=128)
    run = Trainer.create(cfg, root / "runs", progress=False)
    run.run()
    scenario = root / "scenario.json"
    scenario.write_text(run.scenario.model_dump_json())
    return run, scenario


def _bound(session: ChatSession, agent: int) -> dict:
    tool = {t.name: t for t in chat_tools(session.state)}["agent_bound"]
    return json.loads(asyncio.run(tool.run_json({"agent_id": agent}, CancellationToken())))


def _session(run, learners) -> ChatSession:
    request = PlanRequest(scenario=run.scenario, use_cache=False)
    return asyncio.run(ChatSession.start(request, learners))


def test_chat_terms_are_the_critics_under_the_learners(trained):
    """The plan is judged under the learners given to the session, and ``agent_bound``
    reports the terms of that very judgement (its bounds are the verdict's), not version 4's
    (the untrained learners without a trial)."""
    run, _ = trained
    learners = run_learners(run.run_dir, RoutingCore(run.net, run.scenario))
    session = _session(run, learners)
    v = session.outcome.verdict
    facts = session.state.facts
    assert facts.terms.bound.round(3).tolist() == pytest.approx(
        [v.bounds[i] for i in range(run.scenario.n_agents)])
    assert facts.threshold == v.epsilon
    answer = _bound(session, AGENT)
    assert answer["bound_version"] == BOUND_VERSION
    assert answer["learners"].startswith(f"reled learners of run {run.run_dir}")
    assert answer["bound"] == pytest.approx(v.bounds[AGENT], abs=0.051)
    old = _session(run, UNTRAINED)
    assert _bound(old, AGENT)["bound_version"] == NO_TRIAL_VERSION
    assert old.outcome.reference_bound != pytest.approx(session.outcome.reference_bound,
                                                        rel=1e-3)
    assert old.state.facts.terms.bound.tolist() != pytest.approx(facts.terms.bound.tolist(),
                                                                  rel=1e-3)
    # a replan is judged under the same learners
    asyncio.run(session.replan())
    assert session.state.facts.learners is learners
    again = session.outcome.verdict.bounds[AGENT]
    assert _bound(session, AGENT)["bound"] == pytest.approx(again, abs=0.051)


def test_ask_and_chat_take_a_runs_learners_else_the_seeded_untrained_ones(trained):
    run, scenario = trained
    core = RoutingCore(run.net, run.scenario)
    of_run = _bound(_session(run, run_learners(run.run_dir, core)), AGENT)["bound"]
    untrained = _bound(_session(run, fresh_learners(
        TrainConfig(city=run.scenario.city, n_agents=run.scenario.n_agents,
                    seed=run.scenario.seed), core)), AGENT)["bound"]
    v4 = _bound(_session(run, UNTRAINED), AGENT)["bound"]
    assert len({of_run, untrained, v4}) == 3  # the three judgements differ
    base = ["experts", "ask", QUESTION, "--scenario", str(scenario), "--json"]
    res = runner.invoke(app, [*base, "--run", str(run.run_dir)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["bound_version"] == BOUND_VERSION
    assert out["learners"].startswith(f"reled learners of run {run.run_dir} at iteration")
    assert f"bound is {of_run:.1f}" in out["answer"]
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["learners"].startswith(
        f"untrained reled learners initialised with seed {run.scenario.seed}")
    assert f"bound is {untrained:.1f}" in out["answer"]
    res = runner.invoke(app, ["experts", "chat", "--scenario", str(scenario), "--run",
                              str(run.run_dir)], input=f"{QUESTION}\nquit\n")
    assert res.exit_code == 0, res.output
    said = " ".join(res.stdout.split())
    assert f"bound version {BOUND_VERSION} under reled learners of run {run.run_dir}" in said
    assert f"bound is {of_run:.1f}" in said


@pytest.mark.parametrize("verb", [["ask", QUESTION, "--json"], ["chat"]])
def test_a_bad_run_is_one_line(trained, tmp_path, verb):
    run, scenario = trained
    res = runner.invoke(app, ["experts", *verb, "--scenario", str(scenario), "--run",
                              str(tmp_path)], input="quit\n")
    assert res.exit_code == 2 and "no readable config.json" in res.stderr
    res = runner.invoke(app, ["experts", *verb, "--city", "west-oakland", "--agents", "7",
                              "--run", str(run.run_dir)], input="quit\n")
    assert res.exit_code == 2 and "trained 6 learners, the scenario has 7" in res.stderr


def test_with_a_run_the_bound_version_defaults_to_the_runs(trained, tmp_path):
    """``--run`` of a run that trains with bound version 5: ask, chat and generate judge with
    5 unless --bound-version says otherwise (without --run: 6)."""
    import shutil

    run, scenario = trained
    five = tmp_path / "run-v5"
    shutil.copytree(run.run_dir, five, ignore=shutil.ignore_patterns(".lock"))
    stored = json.loads((five / "config.json").read_text())
    assert stored["bound_version"] == BOUND_VERSION == 6
    stored["bound_version"] = 5
    (five / "config.json").write_text(json.dumps(stored))
    base = ["experts", "ask", QUESTION, "--scenario", str(scenario), "--json", "--run", str(five)]
    for flags, version in (([], 5), (["--bound-version", "6"], 6)):
        res = runner.invoke(app, [*base, *flags])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["bound_version"] == version
        assert ("forecast" in out["reason"]) == (version == 6)  # the critic judged with it
    res = runner.invoke(app, ["experts", "chat", "--scenario", str(scenario), "--run",
                              str(five)], input="quit\n")
    assert res.exit_code == 0, res.output
    assert "the critic judges with bound version 5 under" in " ".join(res.stdout.split())
    res = runner.invoke(app, ["experts", "generate", "--scenario", str(scenario), "--run",
                              str(five), "--out", str(tmp_path / "demos"), "--no-progress",
                              "--json"])
    assert res.exit_code in (0, 1), res.output
    assert json.loads(res.stdout)["bound_version"] == 5
