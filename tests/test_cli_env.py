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


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_simulate_bad_input_is_one_line_naming_the_flag():
    base = ["simulate", "--city", "west-oakland", "--agents", "3"]
    _one_line_error(runner.invoke(app, ["simulate", "--preset", "nope"]), "unknown preset",
                    "aguascalientes-peak", "monaco-peak")
    _one_line_error(runner.invoke(app, [*base, "--horizon", "inf"]), "--horizon")
    _one_line_error(runner.invoke(app, [*base, "--background-share", "1.5"]),
                    "--background-share")
    _one_line_error(runner.invoke(app, [*base, "--departure-window", "900", "--horizon", "600"]),
                    "departure_window_s", "shorter than horizon_s")
    _one_line_error(runner.invoke(app, [*base, "--plot", "x.foo"]), "--plot",
                    "unknown figure format")
    res = runner.invoke(app, [*base, "--preset", "nope", "--json"])
    assert json.loads(res.stdout)["error"].startswith("unknown preset")


def test_simulate_json_is_strict_when_nobody_arrives():
    res = runner.invoke(app, ["simulate", "--city", "west-oakland", "--agents", "3",
                              "--horizon", "5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # json.loads rejects NaN only if asked: check by hand
    assert "NaN" not in res.stdout and data["mean_travel_time_arrived"] is None
    assert data["arrival_rate"] == 0.0 and data["total_delay"] >= 0.0


def test_simulate_preset_with_queue_plot(tmp_path):
    png = tmp_path / "queues.png"
    res = runner.invoke(app, ["simulate", "--preset", "aguascalientes-peak", "--agents", "20",
                              "--plot-queues", str(png), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["vehicles"] == 250 and data["background_vehicles"] == 230
    assert data["delay_ratio"] > 0 and data["plot_queues"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
