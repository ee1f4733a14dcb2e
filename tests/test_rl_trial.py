"""The learners' trial update on a plan (bound version 5): seeded, on a copy, toward the plan."""

import numpy as np
import torch

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import run_episode
from relied.env.scenario import Scenario
from relied.experts.bound import divergence_between
from relied.experts.critic import DecisionRows
from relied.rl.config import TrainConfig
from relied.rl.model import ActorCritic
from relied.rl.trial import probs_of, trial_update


def _setup(n=6):
    net = load_city("aguascalientes")
    sc = Scenario(n_agents=n, seed=3).resolve(net)
    core = RoutingCore(net, sc)
    traj = run_episode(core, ShortestPathPolicy(), record=True).trajectories
    torch.manual_seed(0)
    model = ActorCritic(core.obs_dim, core.k, n)
    cfg = TrainConfig(city="aguascalientes", n_agents=n, algo="reled")
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    return traj, model, optim, cfg, DecisionRows.of(traj)


def test_trial_moves_a_copy_toward_the_plan_seeded():
    traj, model, optim, cfg, rows = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    current = probs_of(model)
    trial = trial_update(model, optim, cfg, lambda: np.ones(6))
    first, again = trial(traj), trial(traj)
    p0 = current(rows.obs, rows.mask, rows.agent)
    p1 = first(rows.obs, rows.mask, rows.agent)
    np.testing.assert_array_equal(p1, again(rows.obs, rows.mask, rows.agent))  # seeded
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not optim.state  # the learners' optimiser was not stepped either
    picked = np.arange(len(rows.action)), rows.action
    free = p0[picked] < 0.999  # rows with a choice
    assert free.sum() > 20 and (p1[picked][free] > p0[picked][free]).mean() > 0.75
    assert p1[picked][free].mean() > p0[picked][free].mean() + 0.01  # the plan's actions gained
    assert divergence_between(p0, p1).mean() > 1e-3
    # more steps move further; lambda scales the expert loss (0: no move)
    longer = trial_update(model, optim, cfg, lambda: np.ones(6), steps=4 * cfg.epochs)(traj)
    assert divergence_between(p0, longer(rows.obs, rows.mask, rows.agent)).mean() > \
        divergence_between(p0, p1).mean()
    still = trial_update(model, optim, cfg, lambda: np.zeros(6))(traj)
    np.testing.assert_allclose(still(rows.obs, rows.mask, rows.agent), p0, atol=1e-6)


def test_trial_on_sampled_agents_moves_only_their_policies():
    """Per-agent weights (share='none'): a trial on agents 0 and 1's rows leaves the others'
    policies where they are."""
    traj, model, optim, cfg, rows = _setup()
    p0 = probs_of(model)(rows.obs, rows.mask, rows.agent)
    p1 = trial_update(model, optim, cfg, lambda: np.ones(6))(traj, [0, 1])(
        rows.obs, rows.mask, rows.agent)
    tv = divergence_between(p0, p1)
    mine = np.isin(rows.agent, [0, 1])
    assert tv[mine].mean() > 1e-3 and tv[~mine].max() < 1e-7
