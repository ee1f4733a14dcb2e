"""The learners' trial update on a plan's demonstrations, for the stationarity bound (version 5).

The critic measures the intra-subset divergence forward: how far the learners' policy would
move if they imitated the plan it judges (``relied.experts.bound.TrialUpdate``). The trial
update is the plan-dependent half of the training update, :class:`~relied.rl.hybrid_ppo.
ExpertTerm` (the trainer's expert loss, value filter and per-agent ``lambda``), applied for
``steps`` minibatch steps of ``expert_batch`` rows (the trainer's optimiser state, gradient
clipping and learning rate) to a *copy* of the policy, with a generator seeded by ``seed``:
the same plan gives the same successor, and two plans are compared under the same draws. The
PPO half is left out: it does not depend on the plan. The default ``steps`` is the trainer's
``epochs``, one update's minibatch steps when a rollout fits one minibatch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from relied.env.rollout import Trajectories
from relied.experts.bound import PolicyProbs, TrialUpdate
from relied.rl.config import TrainConfig
from relied.rl.demos import demonstrated
from relied.rl.hybrid_ppo import ExpertTerm, Tensors
from relied.rl.model import ActorCritic, model_device
from relied.rl.rollout import decisions_from, gae

#: the trial update's generator seed (fixed: the bound of a plan does not depend on when the
#: trainer's own generator was last drawn)
TRIAL_SEED = 0


def probs_of(model: ActorCritic) -> PolicyProbs:
    """``policy_probs`` of ``model`` as it is now (numpy in, numpy out, on its device)."""

    def probs(obs: np.ndarray, mask: np.ndarray, agent: np.ndarray) -> np.ndarray:
        d = model_device(model)
        with torch.no_grad():
            logits = model.logits(torch.as_tensor(obs, dtype=torch.float32, device=d),
                                  torch.as_tensor(mask, dtype=torch.bool, device=d),
                                  torch.as_tensor(agent, dtype=torch.long, device=d))
            return torch.softmax(logits, 1).cpu().numpy()

    return probs


def trial_update(model: ActorCritic, optim: torch.optim.Optimizer, cfg: TrainConfig,
                 lam: Callable[[], np.ndarray], steps: int | None = None,
                 seed: int = TRIAL_SEED) -> TrialUpdate:
    """A :class:`~relied.experts.bound.TrialUpdate` over the learners ``model`` (with their
    optimiser ``optim``); ``lam()`` gives the current ``lambda`` per agent ``(n,)``, read at
    each call. ``model`` and ``optim`` are never changed."""
    k = model.k

    def trial(traj: Trajectories, agents: Sequence[int] | None = None) -> PolicyProbs:
        device = model_device(model)
        dec = demonstrated(decisions_from(traj, k), None if agents is None else list(agents))
        successor = copy.deepcopy(model)
        successor.train()
        opt = type(optim)(successor.parameters(), **optim.defaults)
        opt.load_state_dict(copy.deepcopy(optim.state_dict()))
        if len(dec) == 0:
            return probs_of(successor)
        ret = torch.as_tensor(gae(dec, np.zeros(len(dec)), cfg.gamma, 1.0),
                              dtype=torch.float32, device=device)
        weights = torch.as_tensor(np.asarray(lam(), dtype=np.float64), dtype=torch.float32,
                                  device=device)
        term = ExpertTerm.prepare(successor, cfg, Tensors.of(dec).to(device), ret, weights)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(cfg.epochs if steps is None else steps):
            idx = torch.randint(len(dec), (cfg.expert_batch,), generator=gen).to(device)
            loss, _ = term.loss(successor, cfg, idx)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(successor.parameters(), cfg.max_grad_norm)
            opt.step()
        successor.eval()
        return probs_of(successor)

    return trial
