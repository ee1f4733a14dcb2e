"""Bound version 6 (the default): the critic's verdict on the drift the learners' whole next update
with the plan's demonstrations is forecast to cause (a measured lookahead)."""

import copy

import numpy as np
import pytest
import torch
from test_experts_bound import _crowd_plans  # tests/ on sys.path
from test_experts_bound_trial import _learners

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.experts.bound import BOUND_VERSION, LOOKAHEAD_VERSION, TRIAL_VERSION, BoundConfig
from relied.experts.critic import check_plan, execute, plan_bounds, successor_move
from relied.rl.demos import decisions_of
from relied.rl.envs import make_vector_env
from relied.rl.hybrid_ppo import Tensors, evaluate_actions, hybrid_update
from relied.rl.rollout import Decisions, collect, gae
from relied.rl.trial import lookahead_seed, probs_of


@pytest.fixture(scope="module")
def crowd():
    net = load_city("aguascalientes")
    sc, sp, _, plans = _crowd_plans(net, 16)
    model, update = _learners(RoutingCore(net, sc))
    return net, sc, sp, plans, model, update


def _whole_update(model, update, scenario, rows, seed):
    """The next hybrid update computed here from its parts: a rollout of the current policy
    drawn from the lookahead's generator, then PPO + expert loss, every minibatch step."""
    cfg = update.cfg
    gen = torch.Generator().manual_seed(lookahead_seed(seed))

    def act(obs, mask, agent):
        with torch.no_grad():
            p = torch.softmax(model.logits(torch.as_tensor(obs, dtype=torch.float32),
                                           torch.as_tensor(mask),
                                           torch.as_tensor(agent, dtype=torch.long)), 1)
        return torch.multinomial(p, 1, generator=gen)[:, 0].numpy()

    venv = make_vector_env(update.rollout_scenario(scenario), cfg.n_envs, "dummy",
                           decisions_only=True)
    records = collect(venv, act, model.obs_dim, model.k)
    venv.close()
    dec = Decisions.concat([r.dec for r in records])
    return probs_of(hybrid_successor(model, update, gen, dec, decisions_of(rows, model.k)))


def hybrid_successor(model, update, gen, dec, expert):
    """The learners' policy after one hybrid update, computed here: PPO on the rollout rows
    ``dec`` (advantages and returns from the current value function) plus the expert loss on
    ``expert``, from the trainer's optimiser state, minibatches drawn from ``gen``."""
    cfg = update.cfg
    batch = Tensors.of(dec)
    old_logp, value = evaluate_actions(model, batch)
    adv = torch.as_tensor(gae(dec, value.numpy(), cfg.gamma, cfg.gae_lambda))
    successor = copy.deepcopy(model)
    opt = torch.optim.Adam(successor.parameters(), lr=cfg.lr, eps=1e-5)
    opt.load_state_dict(update.optim.state_dict())
    hybrid_update(successor, opt, cfg, gen, batch, old_logp, adv, adv + value,
                  Tensors.of(expert),
                  torch.as_tensor(gae(expert, np.zeros(len(expert)), cfg.gamma, 1.0)),
                  torch.as_tensor(update.lam(), dtype=torch.float32))
    successor.eval()
    return successor


def test_lookahead_verdict_on_the_congested_crowd(crowd):
    """Judged with untrained learners: the herd (everyone on the shortest path: the reference)
    is forecast to drift as much as the reference and is rejected; plans that spread it over
    a second path are forecast to drift less and are accepted. The v5 terms are computed
    beside it, equal to a v5 check's, and v5's verdict is reported. With the lookahead's
    forecast removed (zero drift for every plan) the herd would pass as a quiet tie."""
    net, sc, _, plans, model, update = crowd
    cfg6 = BoundConfig(executions=3, return_tolerance=10.0, version=LOOKAHEAD_VERSION)
    cfg5 = cfg6.model_copy(update={"version": TRIAL_VERSION})
    current = probs_of(model)
    v6 = {k: check_plan(net, sc, r, cfg6, current, trial_update=update)[0]
          for k, r in plans.items()}
    v5 = {k: check_plan(net, sc, r, cfg5, current, trial_update=update)[0]
          for k, r in plans.items()}
    assert not v6["herd"].accepted and "forecast" in v6["herd"].reason
    assert v6["few"].accepted and v6["half"].accepted
    ref_s = v6["few"].reference_lookahead_drift_s  # the reason names the reference's drift
    assert f"below 1 x the reference's {ref_s:.3f} s" in v6["few"].reason
    herd = v6["herd"].lookahead_drift_s
    assert herd == pytest.approx(v6["herd"].reference_lookahead_drift_s) and herd > 0.005
    assert v6["half"].lookahead_drift_s < v6["few"].lookahead_drift_s < herd
    for k in plans:
        assert v6[k].lookahead and not v5[k].lookahead and v5[k].lookahead_drift_s is None
        assert v6[k].bounds == v5[k].bounds and v6[k].plan_bound == v5[k].plan_bound
        assert v6[k].bound_accepted == v5[k].accepted
    assert v6["herd"].offenders and v6["herd"].offenders[0].agent_id in range(16)


def test_the_forecast_is_the_whole_next_update_from_the_critics_seed(crowd):
    """The forecast drift of each agent is successor_move with the successor of the whole next
    update (PPO on a rollout drawn from the critic's own stream, plus the expert loss on the
    plan's rows, every minibatch step), recomputed here from its parts; it is not v5's trial
    (the expert half for 4 steps): removing the PPO half or the rollout makes this test fail.
    Another BoundConfig.seed gives another rollout, hence another forecast."""
    net, sc, _, plans, model, update = crowd
    routes = plans["few"]
    cfg6 = BoundConfig(executions=3, version=LOOKAHEAD_VERSION)
    current = probs_of(model)
    run = execute(net, sc, routes=routes)
    terms = plan_bounds(net, sc, routes, cfg6, current, run=run, trial_update=update)
    whole = _whole_update(model, update, sc, run.decisions, cfg6.seed)
    mine = successor_move(net, sc, run, current, whole)
    np.testing.assert_allclose(terms.lookahead, mine, rtol=1e-9, atol=1e-12)
    rows = run.decisions
    ahead, trial = (f(rows.obs, rows.mask, rows.agent) for f in (whole, update(rows)))
    now = current(rows.obs, rows.mask, rows.agent)
    # the whole update moves the policy further than v5's trial (the expert half, 4 steps)
    assert np.abs(ahead - now).sum(1).mean() > 2 * np.abs(trial - now).sum(1).mean() > 0
    other = plan_bounds(net, sc, routes, cfg6.model_copy(update={"seed": 1}), current, run=run,
                        trial_update=update, scales=terms.scales)
    assert not np.allclose(other.lookahead, terms.lookahead)
    np.testing.assert_array_equal(other.move, terms.move)  # the v5 trial does not move
    assert lookahead_seed(0) != 0  # never the trainer's torch.manual_seed(cfg.seed)


def test_v6_is_the_default_and_stored_settings_load():
    """The default verdict is v6's; v5 and v6 settings round-trip through a batch's record;
    records of versions 1-4 keep loading (upgraded to today's default)."""
    assert BoundConfig().version == BOUND_VERSION == LOOKAHEAD_VERSION == 6
    for kept in (BoundConfig(version=6, epsilon=0.9), BoundConfig(version=5, epsilon=0.7)):
        assert BoundConfig.from_stored(kept.model_dump(mode="json")) == kept
    for old in ({"version": 1, "epsilon": 12000.0, "group": "planner"},
                {"version": 4, "epsilon": 0.8}):
        loaded = BoundConfig.from_stored(old)
        assert loaded.version == 6 and loaded.group == old.get("group", "co-occupancy")
    assert BoundConfig.from_stored({"version": 5, "epsilon": 0.7}).version == TRIAL_VERSION
    with pytest.raises(ValueError):
        BoundConfig(version=7)


def test_v6_without_the_learners_update_judges_as_v5(crowd):
    """Nothing to look ahead with (no trial update): version 6 judges by version 4's stand-in,
    exactly as version 5 does, and says it is not the lookahead's verdict."""
    net, sc, sp, _, model, _ = crowd
    six, _ = check_plan(net, sc, sp, BoundConfig(executions=2, version=6), probs_of(model))
    five, _ = check_plan(net, sc, sp, BoundConfig(executions=2, version=5), probs_of(model))
    assert not six.lookahead and six.lookahead_drift_s is None
    assert six.model_dump() == five.model_dump()

