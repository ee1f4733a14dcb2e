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
