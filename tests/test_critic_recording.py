"""The critic's light recording (decision rows, cell times) gives what full recording gives,
and keeps per learner only its decisions (issue 13: the expert team at 10,000 learners)."""

from functools import partial

import numpy as np
import pytest

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.forecast import TrafficForecast, edge_times
from relied.env.policies import CongestionAwarePolicy, ShortestPathPolicy
from relied.env.presets import load_preset
from relied.env.rollout import run_episode
from relied.experts import critic
from relied.experts.bound import BoundConfig, policy_divergence, uniform_probs
from relied.experts.critic import (
    CellTimes,
    DecisionRows,
    Execution,
    check_plan,
    execute,
    plan_bounds,
    policy_routes,
)


@pytest.fixture(scope="module")
def case():
    """A small congested case: 40 learners among 500 vehicles of aguascalientes-peak,
    departing within 200 s, on their congestion-aware routes."""
    net = load_city("aguascalientes")
    sc = load_preset("aguascalientes-peak").scenario.model_copy(
        update={"n_agents": 40, "departure_window_s": 200.0, "horizon_s": 900.0}).resolve(net)
    return net, sc, policy_routes(net, sc, "congestion-aware")


def skewed(obs, mask, ids):
    """A policy that is neither uniform nor the plan (its value depends on the agent id)."""
    p = mask.astype(float) * (1.0 + ids[:, None] % 3 + np.arange(mask.shape[1]))
    return p / p.sum(axis=1, keepdims=True)


def full_resimulate(net, scenario, routes, alternative, change, config, rng):
    """The previous resimulation: a whole recorded execution of the moved scenario."""
    deps = np.asarray(scenario.departures_s, dtype=float)
    shift = np.where(change, rng.uniform(0, config.jitter_s, deps.size), 0.0)
    deps = np.minimum(np.round(deps + shift, 1), scenario.horizon_s - scenario.dt_s)
    moved = scenario.model_copy(update={"departures_s": deps.tolist()})
    mixed = [list(alternative[i]) if change[i] else list(routes[i]) for i in range(len(routes))]
    return execute(net, moved, routes=mixed, trajectories=True)


def test_light_execution_equals_the_full_recording(case):
    net, sc, routes = case
    light = execute(net, sc, routes=routes)
    full = execute(net, sc, routes=routes, trajectories=True)
    assert light.recorded is None and full.recorded is not None
    np.testing.assert_array_equal(light.returns, full.returns)
    assert light.metrics == full.metrics
    np.testing.assert_array_equal(light.edges_by_step, full.edges_by_step)
    np.testing.assert_array_equal(light.cell_keys, full.cell_keys)
    np.testing.assert_array_equal(light.cell_times_s, full.cell_times_s)
    assert all(np.array_equal(a, b) for a, b in zip(light.agent_cells, full.agent_cells,
                                                    strict=True))
    rows = DecisionRows.of(full.traj)
    assert rows.step.size > 100
    for field in DecisionRows.__dataclass_fields__:  # the observed rows: those of the full obs
        np.testing.assert_array_equal(getattr(light.decisions, field), getattr(rows, field))
    traj = full.traj
    for kwargs in ({}, {"policy_probs": skewed},
                   {"policy_probs": skewed, "previous_probs": uniform_probs, "kind": "kl"}):
        dense = policy_divergence(traj.obs, traj.action, traj.mask, sc.n_agents, **kwargs)
        mine = light.decisions.divergence(sc.n_agents, **kwargs)
        for a, b in zip(dense, mine, strict=True):
            np.testing.assert_array_equal(a, b)
    for field in ("obs", "action", "mask", "reward", "done"):  # replayed on first use
        np.testing.assert_array_equal(getattr(light.traj, field), getattr(traj, field))


def test_congestion_aware_execution_and_forecast_unchanged(case):
    """Runs without observations (``drive``) take the same trips: the congestion-aware
    policy reads the live cost-to-go whose cache the observation used to advance."""
    net, sc, _ = case
    light = execute(net, sc, CongestionAwarePolicy)
    full = execute(net, sc, CongestionAwarePolicy, trajectories=True)
    np.testing.assert_array_equal(light.returns, full.returns)
    np.testing.assert_array_equal(light.edges_by_step, full.edges_by_step)
    core = RoutingCore(net, sc, record_traversals=True)
    run_episode(core, ShortestPathPolicy())  # observations every step, as before
    np.testing.assert_array_equal(TrafficForecast.simulate(net, sc).times, edge_times(core, 60.0))


def _reports(net, sc, routes, agents, monkeypatch=None):
    critic._CACHE.clear()
    critic._SCALES.clear()
    cfg = BoundConfig(executions=3)
    report, _ = check_plan(net, sc, routes, cfg, skewed, agents=agents)
    terms = plan_bounds(net, sc, routes, cfg, skewed, skewed, agents=agents)
    return report.model_dump(), terms


@pytest.mark.parametrize("agents", [None, [1, 4, 9, 16, 25, 36]])
def test_critic_verdict_identical_to_full_recording(case, monkeypatch, agents):
    """Bound terms and the check's report are those of whole recorded executions and
    resimulations (the previous implementation), for all agents and for a judged sample."""
    net, sc, routes = case
    light_report, light = _reports(net, sc, routes, agents)
    monkeypatch.setattr(critic, "execute", partial(execute, trajectories=True))
    monkeypatch.setattr(critic, "resimulate", full_resimulate)
    full_report, full = _reports(net, sc, routes, agents)
    assert light_report == full_report
    for field in ("bound", "external", "divergence", "absolute", "volatility", "samples"):
        np.testing.assert_array_equal(getattr(light, field), getattr(full, field))
    assert light.scales == full.scales and light.groups == full.groups
    assert (light.samples >= 2).any() and light.external.max() > 0  # resimulations counted


def test_what_an_execution_keeps_grows_with_decisions_not_steps(case):
    """Per learner an execution keeps its decision rows, not a row per step; a resimulation
    keeps only the cell times. Fails if the recording keeps every learner at every step."""
    net, sc, routes = case
    spread = sc.model_copy(update={"departures_s": [d + 15.0 * i for i, d in
                                                    enumerate(sc.departures_s)]})
    short, long = execute(net, sc, routes=routes), execute(net, spread, routes=routes)
    assert long.edges_by_step.shape[0] > 1.5 * short.edges_by_step.shape[0]  # more steps
    assert long.decisions.step.size == short.decisions.step.size  # the same decisions
    assert long.decisions.nbytes == short.decisions.nbytes
    assert short.decisions.step.size == sum(len(r) - 1 for r in routes)  # one per edge
    assert short.recorded is None and long.recorded is None
    dense = short.traj
    decisions = int((~dense.mask[:, :, -1]).sum())
    assert short.decisions.step.size == decisions < dense.mask[:, :, -1].size / 4
    assert short.decisions.nbytes < dense.obs.nbytes / 4
    change = np.zeros(sc.n_agents, dtype=bool)
    change[::2] = True
    alternative = policy_routes(net, sc, "shortest-path")
    moved = critic.resimulate(net, sc, routes, alternative, change, BoundConfig(),
                              np.random.default_rng(0))
    assert type(moved) is CellTimes and not isinstance(moved, Execution)
    assert moved.cell_keys.shape == moved.cell_times_s.shape
    assert moved.cell_keys.size < 5 * short.cell_keys.size
