"""``relied experts ask|chat --bound-version`` (6, the measured lookahead, the default as for
``relied experts generate``; 5, the analytic bound with the trial update) reaches the critic
that judges the chat's plan, and ``--json`` records the version used."""

import json

import pytest
from typer.testing import CliRunner

from relied.cli import app

runner = CliRunner()
BASE = ["--city", "west-oakland", "--agents", "6"]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def _ask(*flags) -> dict:
    res = runner.invoke(app, ["experts", "ask", "what is the bound of agent 3?", *BASE,
                              "--json", *flags])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_ask_judges_with_the_version_asked_for():
    default, five = _ask(), _ask("--bound-version", "5")
    # the lookahead judged the default's plan (its reason compares forecast drifts), the
    # analytic bound the other's: the flag reached the critic, not only the report
    assert default["bound_version"] == 6 and "forecast" in default["reason"]
    assert five["bound_version"] == 5 and "forecast" not in five["reason"]
    assert five["reason"] != default["reason"]
    assert _ask("--bound-version", "6")["reason"] == default["reason"]


@pytest.mark.parametrize(("flags", "version", "judged_by"), [
    ([], 6, "next update with this plan's demonstrations is forecast"),
    (["--bound-version", "5"], 5, "the mean of the agents' bounds")])
def test_chat_judges_with_the_version_asked_for(flags, version, judged_by):
    res = runner.invoke(app, ["experts", "chat", *BASE, *flags], input="verdict\nquit\n")
    assert res.exit_code == 0, res.output
    said = " ".join(res.stdout.split())
    assert f"the critic judges with bound version {version} under" in said
    verdict = said.split("you> ", 1)[1]  # the critic's reason, as 'verdict' prints it
    assert verdict.startswith("accepted in round 1:") and judged_by in verdict


@pytest.mark.parametrize("verb", [["ask", "why?", "--json"], ["chat"]])
@pytest.mark.parametrize("version", ["4", "7"])
def test_an_unknown_bound_version_is_refused(verb, version):
    res = runner.invoke(app, ["experts", *verb, *BASE, "--bound-version", version],
                        input="quit\n")
    assert res.exit_code == 2 and "--bound-version" in res.output
