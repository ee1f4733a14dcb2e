"""``relied simulate --meso-junctions`` (issue 11): SUMO meso's junction model from the CLI,
only with ``--backend sumo-meso``; and SumoCore does not load the core's compiled kernels it
does not use when it is built (SUMO moves its vehicles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libsumo")

from typer.testing import CliRunner  # noqa: E402

from relied.cli import app  # noqa: E402

#: a loaded signalised West Oakland run (tests/test_sumo_signals.py's green-split case)
ARGS = ["simulate", "--city", "west-oakland", "--agents", "120", "--seed", "3", "--signals",
        "--departure-window", "300", "--horizon", "1200", "--sumo-signals", "core", "--json"]


def test_meso_junctions_flag_selects_the_junction_model():
    """``green-split`` runs the core's junction model in SUMO meso (no junction control):
    the same demand runs faster than with ``control``, the default; the JSON says which."""
    runner = CliRunner()
    out = {}
    for flag in ([], ["--meso-junctions", "control"], ["--meso-junctions", "green-split"]):
        res = runner.invoke(app, [*ARGS, "--backend", "sumo-meso", *flag])
        assert res.exit_code == 0, res.output
        got = json.loads(res.stdout)
        out[flag[-1] if flag else "default"] = got
        assert got["meso_junctions"] == (flag[-1] if flag else "control")
    assert out["default"]["mean_travel_time"] == out["control"]["mean_travel_time"]
    assert out["green-split"]["mean_travel_time"] < out["control"]["mean_travel_time"] - 1.0


@pytest.mark.parametrize("extra,message", [
    (["--meso-junctions", "green-split"], "--meso-junctions applies to --backend sumo-meso "
     "only (got --backend core); drop it or use --backend sumo-meso"),
    (["--backend", "sumo", "--meso-junctions", "control"], "--meso-junctions applies to "
     "--backend sumo-meso only (got --backend sumo); drop it or use --backend sumo-meso"),
    (["--backend", "sumo-meso", "--meso-junctions", "yield"],
     "unknown --meso-junctions 'yield'; choose control or green-split"),
])
def test_meso_junctions_flag_errors_are_one_line(extra, message):
    res = CliRunner().invoke(app, ["simulate", "--city", "west-oakland", "--agents", "5",
                                   *extra])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {message}"


LOADS = """
import sys
from relied.env import kernel
from relied.env.cities import city_source, load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
from relied.env.sumo import load_sumo_network
from relied.env.sumo.core import SumoCore

net = load_city("west-oakland")
sc = Scenario(city="west-oakland", n_agents=5)
kernels = (kernel.discharge_queues, kernel.cost_to_go_rows, kernel.floor_choice)
SumoCore(net, sc, load_sumo_network(net, city_source("west-oakland").path), mode="meso")
after_sumo = [len(k.signatures) for k in kernels]
RoutingCore(net, sc)
print([after_sumo, [len(k.signatures) for k in kernels]])
"""


def test_sumo_core_loads_no_compiled_kernel_it_does_not_use():
    """With numba's JIT on (a subprocess): building a SumoCore loads neither the queue
    discharge (SUMO moves the vehicles) nor the floor bounds (no policy asked yet; the first
    observation's live cost-to-go does run the Dijkstra); a RoutingCore loads them all."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    run = subprocess.run([sys.executable, "-c", LOADS], env=env, capture_output=True,
                         text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    sumo, core = json.loads(run.stdout.strip().splitlines()[-1])
    assert sumo[0] == sumo[2] == 0 and min(core) >= 1, run.stdout
