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
from relied.rl.rollout import Decisions, decisions_from, gae

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
    assert dec.gstate.shape == (3, 0)  # no global state unless the env reports one
    state = np.arange(8.0).reshape(4, 2)  # (T, edges)
    with_state = decisions_from(hand_made(), k=2, state=state, scenario=3)
    assert with_state.gstate.tolist() == state[[0, 2, 1]].tolist()  # each row's own step
    assert with_state.scenario.tolist() == [3, 3, 3]


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


def test_value_filter_drops_demos_the_value_rates_above_the_expert(expert_set):
    core, experts = expert_set
    cfg = TrainConfig(city="west-oakland", n_agents=6, algo="reled", epochs=1)
    model = ActorCritic(core.obs_dim, core.k, core.n)
    with torch.no_grad():
        model.value_net.biases[-1] += 1e3  # V(s) far above any demonstrated return
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


def _bandit_core():
    """One learner at O choosing O->A->D (free-flow shorter, narrow: background traffic queues
    there) or O->B->D (longer, wide): only experience tells that B is faster."""
    from relied.env.core import RoutingCore
    from relied.env.network import CityNetwork
    from relied.env.scenario import Scenario

    net = CityNetwork.from_edges(
        "two", lon=np.array([0.0, 0.005, 0.005, 0.01]), lat=np.array([0.0, 0.002, -0.002, 0.0]),
        src=np.array([0, 1, 0, 2, 3, 3]), dst=np.array([1, 3, 2, 3, 1, 2]),
        length_m=np.array([400, 400, 600, 600, 400, 600.0]), speed_kph=np.full(6, 36.0),
        saturation_vps=np.array([5, 0.1, 5, 5, 5, 5.0]), green_share=np.ones(6),
        storage=np.full(6, 1e4))
    m = 40  # background vehicles on the free-flow shortest path, through the narrow edge
    sc = Scenario(city="two", n_agents=1, background_share=m / (m + 1), origins=[0],
                  destinations=[3], departures_s=[20.0], background_origins=[0] * m,
                  background_destinations=[3] * m, background_departures_s=[0.0] * m,
                  min_trip_m=0, horizon_s=900)
    return RoutingCore(net, sc)


def _train_bandit(pg_sign: float, iterations: int = 12) -> float:
    """PPO (no demos) on the bandit; ``pg_sign`` scales the advantages (1: PPO, 0: no policy
    gradient, -1: reversed). Returns the learned probability of the wide route."""
    from relied.env.rollout import run_episode

    core = _bandit_core()
    torch.manual_seed(0)
    model = ActorCritic(core.obs_dim, core.k, 1, share="all")
    cfg = TrainConfig(city="west-oakland", n_agents=1, algo="ippo", epochs=4, minibatch=64)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def sample(c):
        mask = c.action_mask()
        with torch.no_grad():
            p = torch.softmax(model.logits(torch.as_tensor(c.observe()),
                                           torch.as_tensor(mask), torch.zeros(1, dtype=torch.long)),
                              1).numpy()[0]
        return np.array([rng.choice(len(p), p=p)])

    def p_wide() -> float:
        core.reset()
        while core.status[0] != 1:  # until the learner is at O, deciding
            core.step(np.array([core.noop]))
        with torch.no_grad():
            p = torch.softmax(model.logits(torch.as_tensor(core.observe()),
                                           torch.as_tensor(core.action_mask()),
                                           torch.zeros(1, dtype=torch.long)), 1)[0]
        heads = core.net.edge_dst[core.out_table[0, :2]]
        return float(p[int(np.flatnonzero(heads == 2)[0])])

    for _ in range(iterations):
        decs = []
        for _ in range(8):
            decs.append(decisions_from(run_episode(core, sample, record=True).trajectories,
                                       core.k))
        dec = Decisions.concat(decs)
        t = Tensors.of(dec)
        old_logp, value = evaluate_actions(model, t)
        adv = torch.as_tensor(gae(dec, value.numpy(), cfg.gamma, cfg.gae_lambda),
                              dtype=torch.float32)
        hybrid_update(model, optim, cfg, gen, t, old_logp, pg_sign * adv, adv + value)
    return p_wide()


def test_ppo_policy_gradient_finds_the_faster_route_demos_would_not_show():
    """Only the policy gradient can find the wide route (free-flow shortest path = narrow):
    zeroing or reversing the PPO gradient must fail this."""
    core = _bandit_core()
    from relied.env.policies import RoutePolicy
    from relied.env.rollout import run_episode

    narrow = run_episode(core, RoutePolicy(core, [[0, 1, 3]])).metrics["mean_travel_time"]
    wide = run_episode(core, RoutePolicy(core, [[0, 2, 3]])).metrics["mean_travel_time"]
    assert wide < 0.8 * narrow  # the wide route really is faster under the background queue
    # (a zeroed or sign-flipped gradient inside hybrid_update leaves it near 0.5 or below)
    assert _train_bandit(1.0) > 0.8
    assert 0.4 < _train_bandit(0.0) < 0.6  # control: no policy gradient, no preference
