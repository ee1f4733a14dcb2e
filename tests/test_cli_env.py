import json

from typer.testing import CliRunner

from relied.cli import app

runner = CliRunner()


def test_cities_json_lists_the_shipped_cities():
    result = runner.invoke(app, ["cities", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["cities"]}
    assert rows["west-oakland"]["nodes"] == 22 and rows["monaco"]["edges"] == 619


def test_simulate_json_and_plot(tmp_path):
    png = tmp_path / "routes.png"
    result = runner.invoke(app, ["simulate", "--city", "west-oakland", "--agents", "5",
                                 "--policy", "shortest-path", "--seed", "1", "--json",
                                 "--plot", str(png)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("mean_travel_time", "p95_travel_time", "arrival_rate", "agent_steps_per_s"):
        assert key in data
    assert data["arrival_rate"] == 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_simulate_policies_rank_as_expected():
    def run(policy):
        out = runner.invoke(app, ["simulate", "--city", "aguascalientes", "--agents", "30",
                                  "--policy", policy, "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    assert run("shortest-path")["mean_travel_time"] < run("random")["mean_travel_time"]


def test_simulate_table_output():
    result = runner.invoke(app, ["simulate", "--city", "west-oakland", "--agents", "3"])
    assert result.exit_code == 0
    assert "mean_travel_time" in result.stdout and "arrival_rate" in result.stdout


def test_bad_inputs_are_one_line_errors():
    for args, needle in ((["--city", "atlantis"], "unknown city 'atlantis'"),
                         (["--policy", "teleport"], "unknown policy 'teleport'")):
        result = runner.invoke(app, ["simulate", *args])
        assert result.exit_code == 2
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
