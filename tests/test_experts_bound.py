"""The stationarity bound on hand-computed cases, and the critic's check on real scenarios."""

import numpy as np
import pytest

from relied.env.cities import load_city
from relied.env.core import SLOT_FEATURES, RoutingCore
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario
from relied.experts.bound import (
    BoundConfig,
    bound_constants,
    divergence_to_expert,
    expert_divergence,
    interaction_groups,
    stationarity_bound,
    uniform_probs,
)
from relied.experts.critic import check_plan, execute


def test_constants_follow_the_formula():
    assert bound_constants(0.5, 1.0) == pytest.approx((2.0, 4.0))
    c1, c2 = bound_constants(0.95, 5.0)
    assert c1 == pytest.approx(20.0) and c2 == pytest.approx(2 * 0.95 * 5 / 0.05**2)


def test_bound_hand_computed():
    bound, ext, div = stationarity_bound([0.1, 0.2, 0.3], [0.5, 0.25, 1.0],
                                         [[0, 1], [0, 1, 2], [2]], gamma=0.5, r_max=1.0)
    assert ext == pytest.approx([0.2, 0.4, 0.6])
    assert div == pytest.approx([1.0, 6.0, 0.0])  # c2 * (0.25), c2 * (0.5 + 1.0), alone
    assert bound == pytest.approx([1.2, 6.4, 0.6])


def test_tv_and_pinsker_kl():
    probs = np.array([[0.2, 0.3, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert divergence_to_expert(probs, np.array([2, 1]), "tv") == pytest.approx([0.5, 0.0])
    kl = divergence_to_expert(probs, np.array([2, 1]), "kl")
    assert kl == pytest.approx([np.sqrt(np.log(2) / 2), 0.0])
    assert kl[0] >= 0.5  # Pinsker bounds TV from above
    assert divergence_to_expert(probs, np.array([3, 0]), "kl") == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence_to_expert(probs, np.array([0, 0]), "js")


def test_expert_divergence_uniform_and_custom():
    mask = np.zeros((2, 2, 3), dtype=bool)
    mask[0, 0] = [True, False, False]  # agent 0 decides with one valid slot: TV 0
    mask[0, 1] = [False, False, True]  # agent 1 not deciding
    mask[1, 0] = [False, False, True]
    mask[1, 1] = [True, True, False]  # agent 1 decides among two: TV 1/2
    action = np.array([[0, 2], [2, 1]])
    obs = np.zeros((2, 2, 4), dtype=np.float32)
    assert expert_divergence(obs, action, mask, 2) == pytest.approx([0.0, 0.5])
    assert uniform_probs(obs[1], mask[1], np.arange(2))[1] == pytest.approx([0.5, 0.5, 0.0])

    def wrong_way(o, m, ids):
        p = np.zeros(m.shape)
        p[:, 0] = 1.0
        return p

    assert expert_divergence(obs, action, mask, 2, wrong_way) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="policy_probs returned shape"):
        expert_divergence(obs, action, mask, 2, lambda o, m, i: np.ones((1, 1)))


def test_interaction_groups_modes():
    edges = np.array([[5, -1, 7], [5, 5, -1], [7, 8, -1]])  # (T=3, n=3)
    assert interaction_groups(edges, "co-occupancy") == [[0, 1], [0, 1], [2]]
    assert interaction_groups(edges, "shared-edges") == [[0, 1, 2], [0, 1], [0, 2]]
    assert interaction_groups(edges, "planner", [[0], [1, 2]]) == [[0], [1, 2], [1, 2]]
    with pytest.raises(ValueError, match="unknown group mode"):
        interaction_groups(edges, "nearby")


def _sp_routes(net, scenario):
    core = RoutingCore(net, scenario, record_routes=True)
    return run_episode(core, ShortestPathPolicy()).routes


def test_naive_shortest_paths_under_heavy_load_are_rejected():
    net = load_city("aguascalientes")
    heavy = Scenario(city="aguascalientes", n_agents=300, seed=0).resolve(net)
    report, run = check_plan(net, heavy, _sp_routes(net, heavy), BoundConfig())
    assert not report.accepted
    assert report.offenders and report.offenders[0].bound > report.epsilon
    worst = report.offenders[0]
    assert worst.bound == pytest.approx(worst.external_term + worst.divergence_term)
    assert report.shared_edges and all(c >= 2 for _, _, c in report.shared_edges)
    assert "exceed epsilon" in report.reason
    assert run.traj.obs.shape[1] == 300


def test_light_load_shortest_paths_pass_and_slow_plans_fail():
    net = load_city("aguascalientes")
    light = Scenario(city="aguascalientes", n_agents=20, seed=0).resolve(net)
    routes = _sp_routes(net, light)
    report, _ = check_plan(net, light, routes, BoundConfig())
    assert report.accepted and not report.offenders
    assert report.plan_mean_return == pytest.approx(execute(net, light).returns.mean())
    slow, _ = check_plan(net, light, routes, BoundConfig(),
                         baseline_return=report.plan_mean_return + 1.0)
    assert not slow.accepted and slow.too_slow and not report.too_slow
    assert "below the free-flow shortest-path baseline" in slow.reason
    # a learner that already drives the shortest path (the expert's action here: the slot with
    # zero detour in the observation) has no divergence left: the bound shrinks to Vol_ext
    def shortest_learner(obs, mask, ids):
        k = mask.shape[1] - 1
        per = obs[:, 4:].reshape(len(obs), k, SLOT_FEATURES)
        detour = np.where(per[:, :, 0] > 0, per[:, :, 1], np.inf)
        return np.eye(k + 1)[np.argmin(detour, axis=1)]

    follow, _ = check_plan(net, light, routes, BoundConfig(), policy_probs=shortest_learner)
    assert max(report.bounds) > 1000
    assert max(follow.bounds) < 0.05 * max(report.bounds)


def test_volatility_outside_group_only_moves_agents_outside_the_group():
    from relied.env.cities import load_city
    from relied.env.core import RoutingCore
    from relied.env.policies import ShortestPathPolicy
    from relied.env.rollout import run_episode
    from relied.env.scenario import Scenario
    from relied.experts.bound import BoundConfig
    from relied.experts.critic import return_volatility

    net = load_city("aguascalientes")
    one = Scenario(n_agents=1, seed=11).resolve(net)
    crowd = one.model_copy(update={"n_agents": 30, "origins": one.origins * 30,
                                   "destinations": one.destinations * 30,
                                   "departures_s": [0.0] * 30})
    core = RoutingCore(net, crowd, record_routes=True)
    routes = run_episode(core, ShortestPathPolicy()).routes
    together = [list(range(30))] * 30
    exact = BoundConfig(volatility="outside-group", executions=3)
    fast = BoundConfig(volatility="all", executions=3)
    # one group holds everybody: nobody outside it moves, so nothing external varies
    np.testing.assert_allclose(return_volatility(net, crowd, routes, exact, together), 0.0,
                               atol=1e-9)
    assert return_volatility(net, crowd, routes, fast, together).max() > 0.01
    # singleton groups in a staggered stream: each agent keeps its own departure while the
    # others' jitter changes who shares the road with it
    stream = crowd.model_copy(update={"departures_s": [5.0 * i for i in range(30)]})
    alone = [[i] for i in range(30)]
    assert return_volatility(net, stream, routes, exact, alone).max() > 0.01
