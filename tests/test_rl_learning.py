"""Decision transitions, GAE, the masked grouped actor-critic and the hybrid loss."""

import numpy as np
import pytest
import torch

from relied.env.core import SLOT_FEATURES, RoutingCore
from relied.env.rollout import Trajectories
from relied.rl.config import TrainConfig
from relied.rl.demos import load_expert_set, shortest_path_demos
from relied.rl.hybrid_ppo import Tensors, evaluate_actions, hybrid_update
from relied.rl.model import ActorCritic
from relied.rl.rollout import decisions_from, gae

torch.set_num_threads(1)


def hand_made() -> Trajectories:
    t, n, k = 4, 2, 2
    mask = np.zeros((t, n, k + 1), dtype=bool)
    mask[:, :, k] = True
    for step, agent in ((0, 0), (2, 0), (1, 1)):
        mask[step, agent] = [True, True, False]
    obs = np.arange(t * n * 3, dtype=np.float32).reshape(t, n, 3)
    action = np.full((t, n), k)
    action[0, 0], action[2, 0], action[1, 1] = 1, 0, 1
    reward = np.array([[-1.0, 0.0], [-1.0, -1.0], [-1.0, -1.0], [4.0, 5.0]])
    return Trajectories(obs, action, mask, reward, np.zeros((t, n), dtype=bool))


def test_decisions_sum_rewards_between_decisions():
    dec = decisions_from(hand_made(), k=2)
    assert dec.agent.tolist() == [0, 0, 1]
    assert dec.t.tolist() == [0, 2, 1]
    assert dec.action.tolist() == [1, 0, 1]
    assert dec.reward.tolist() == [-2.0, 3.0, 3.0]
    assert dec.end.tolist() == [False, True, True]
    assert dec.obs[2].tolist() == hand_made().obs[1, 1].tolist()
    assert dec.gstate[0] == pytest.approx(hand_made().obs[0].mean(0))


def test_gae_gives_discounted_returns_and_td_errors():
    dec = decisions_from(hand_made(), k=2)
    ret = gae(dec, np.zeros(3), gamma=0.9, lam=1.0)
    assert ret == pytest.approx([-2.0 + 0.9 * 3.0, 3.0, 3.0])
    adv = gae(dec, np.array([1.0, 2.0, 0.5]), gamma=0.9, lam=0.0)
    assert adv == pytest.approx([-2.0 + 0.9 * 2.0 - 1.0, 3.0 - 2.0, 3.0 - 0.5])


def test_policy_masks_invalid_actions_and_groups_are_independent():
    torch.manual_seed(0)
    model = ActorCritic(obs_dim=14, k=2, n_agents=4, share="none")
    obs = torch.randn(4, 14)
    mask = torch.tensor([[True, False, False], [False, True, False], [True, True, False],
                         [False, False, True]])
    agent = torch.arange(4)
    probs = model.dist(obs, mask, agent).probs
    assert torch.all(probs[~mask] == 0) and torch.allclose(probs.sum(1), torch.ones(4))
    before = model.logits(obs, mask, agent).detach().clone()
    with torch.no_grad():
        model.actor.weights[0][1] += 1.0  # only agent 1's weights change
    after = model.logits(obs, mask, agent).detach()
    changed = ~torch.isclose(before, after).all(dim=1)
    assert changed.tolist() == [False, True, False, False]


@pytest.mark.parametrize("share, groups", [("all", 1), ("group", 2)])
def test_shared_and_grouped_parameters(share, groups):
    model = ActorCritic(obs_dim=14, k=2, n_agents=6, share=share, n_groups=2)
    assert model.actor.weights[0].shape[0] == groups
    x = torch.ones(6, 14)
    logits = model.logits(x, torch.ones(6, 3, dtype=bool), torch.arange(6))
    # same observation: agents differ only through the id embedding (all) or group (group)
    assert not torch.allclose(logits[0], logits[1])
    if share == "group":
        assert torch.allclose(logits[0], logits[2])


def test_actor_scores_slots_by_features_for_any_out_degree():
    torch.manual_seed(0)
    f = SLOT_FEATURES
    model = ActorCritic(obs_dim=4 + f * 4, k=4, n_agents=2, share="all")
    agent = torch.zeros(1, dtype=torch.long)
    slot_a, slot_b = torch.rand(f), torch.rand(f)
    obs4 = torch.cat([torch.rand(4), slot_a, slot_b, slot_a, torch.zeros(f)])[None]
    mask4 = torch.tensor([[True, True, True, False, False]])
    logits = model.logits(obs4, mask4, agent)[0]
    assert logits[0] == logits[2]  # same edge features, same score, whatever the slot
    # the same node seen in a city with at most 2 out-edges: same scores for the same edges
    obs2 = torch.cat([obs4[0, :4], slot_a, slot_b])[None]
    logits2 = model.logits(obs2, torch.tensor([[True, True, False]]), agent)[0]
    assert torch.allclose(logits2[:2], logits[:2])


@pytest.fixture(scope="module")
def expert_set(oakland, tmp_path_factory):
    cfg = TrainConfig(city="west-oakland", n_agents=6, seed=2)
    core = RoutingCore(oakland, cfg.scenario())
    paths = shortest_path_demos(core.scenario, tmp_path_factory.mktemp("demos"))
    return core, load_expert_set(paths, core, gamma=0.99, accepted_only=True)


def _fit(core, experts, steps, **overrides):
    torch.manual_seed(0)
    cfg = TrainConfig(city="west-oakland", n_agents=6, algo="bc", epochs=1, minibatch=64,
                      expert_batch=64, lr=1e-2, **overrides)
    model = ActorCritic(core.obs_dim, core.k, core.n)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    t = Tensors.of(experts.dec)
    ret = torch.as_tensor(experts.ret, dtype=torch.float32)
    nll = [-evaluate_actions(model, t)[0].mean().item()]
    stats = {}
    for _ in range(steps):
        zeros = torch.zeros(len(t.action))
        stats = hybrid_update(model, optim, cfg, gen, t, zeros, zeros, zeros, t, ret,
                              torch.ones(core.n))
        nll.append(-evaluate_actions(model, t)[0].mean().item())
    return nll, stats


def test_bc_loss_decreases_on_fixed_demos(expert_set):
    core, experts = expert_set
    assert len(experts.dec) > 20 and len(experts.routes_km) == 6
    nll, stats = _fit(core, experts, 15)
    assert nll[-1] < 0.3 * nll[0]
    assert stats["expert_kept"] == 1.0  # no critic filter for bc


def test_ppo_style_expert_loss_raises_expert_action_probability(expert_set):
    core, experts = expert_set
    nll, _ = _fit(core, experts, 15, expert_loss="ppo")
    assert nll[-1] < nll[0] - 0.1


def test_critic_filter_drops_demos_the_critic_rates_above_the_expert(expert_set):
    core, experts = expert_set
    cfg = TrainConfig(city="west-oakland", n_agents=6, algo="reled", epochs=1)
    model = ActorCritic(core.obs_dim, core.k, core.n)
    with torch.no_grad():
        model.critic.biases[-1] += 1e3  # V(s) far above any demonstrated return
    t = Tensors.of(experts.dec)
    before = evaluate_actions(model, t)[0]
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    n = len(t.action)
    stats = hybrid_update(model, optim, cfg.model_copy(update={"algo": "bc"}),
                          torch.Generator().manual_seed(0), t, torch.zeros(n), torch.zeros(n),
                          torch.zeros(n), t, torch.as_tensor(experts.ret, dtype=torch.float32),
                          torch.ones(core.n))
    assert stats["expert_kept"] == 0.0 and stats["loss_expert"] == 0.0
    assert torch.allclose(evaluate_actions(model, t)[0], before)
