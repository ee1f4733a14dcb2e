"""Shared test set-up: a private network cache and small scenarios on shipped cities."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("RELIED_CACHE_DIR", tempfile.mkdtemp(prefix="relied-test-cache-"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def oakland():
    from relied.env.cities import load_city

    return load_city("west-oakland")


@pytest.fixture(scope="session")
def aguas():
    from relied.env.cities import load_city

    return load_city("aguascalientes")


@pytest.fixture(scope="session")
def sumo_net(oakland):
    """West Oakland's SUMO network (for the SUMO tests, which importorskip libsumo first)."""
    from relied.env.cities import city_source
    from relied.env.sumo import load_sumo_network

    return load_sumo_network(oakland, city_source("west-oakland").path)


@pytest.fixture
def train_config_of(monkeypatch, tmp_path):
    """``train_config_of(*flags)``: the TrainConfig ``relied train`` builds from these flags
    (its Trainer is not created; the run is stopped there)."""
    from typer.testing import CliRunner

    from relied.cli import app

    seen = []

    def create(cfg, runs_dir, progress=True, provider=None):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr("relied.rl.trainer.Trainer.create", create)

    def config_of(*flags: str):
        base = ["train", "--city", "aguascalientes", "--agents", "4", "--runs-dir",
                str(tmp_path / "runs")]
        result = CliRunner().invoke(app, [*base, *flags])
        return seen.pop() if seen else result

    return config_of
