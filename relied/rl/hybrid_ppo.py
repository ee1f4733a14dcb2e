"""One update of the hybrid expert-agent objective (CleanRL-style, every knob from the config).

For agent ``i`` the loss is ``L_PPO(own rollouts) + lambda_i(t) * L_expert(its demos)``:

* ``L_PPO``: clipped surrogate ``-min(r A, clip(r, 1-eps, 1+eps) A)`` with normalised GAE
  advantages, ``vf_coef`` times the squared value error, minus ``ent_coef`` times the entropy;
* ``L_expert`` (``expert_loss``): ``bc`` is the negative log-likelihood of the expert's action
  under the masked policy; ``ppo`` is a PPO-style surrogate on expert transitions with
  advantage +1, ``-min(r_E, 1+eps)``, ``r_E`` the probability ratio of the expert action to the
  policy at the start of the update (it stops pushing once the expert action gained ``eps``);
* value filter (``value_filter``, RELED): an expert transition counts only while its
  demonstrated discounted return beats the value function's estimate of that state,
  ``G_E(s) > V(s)`` (imitate where the expert is better than what the agent expects).

Agent rollouts and expert transitions stay in separate buffers and meet only in this loss
(the seam Tianshou's GAIL uses). :class:`ExpertTerm` is the expert half, shared by both
engines: ``hybrid_update`` here and ``HybridPPO`` (a Tianshou ``PPO``) in
``relied.rl.tianshou_engine``. ``bc`` (the algorithm) drops ``L_PPO`` and uses
``lambda = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from relied.rl.config import TrainConfig
from relied.rl.model import ActorCritic, model_device
from relied.rl.rollout import Decisions


@dataclass
class Tensors:
    obs: torch.Tensor
    mask: torch.Tensor
    action: torch.Tensor
    agent: torch.Tensor
    gstate: torch.Tensor
    scenario: torch.Tensor

    @staticmethod
    def of(dec: Decisions) -> Tensors:
        return Tensors(torch.as_tensor(dec.obs), torch.as_tensor(dec.mask),
                       torch.as_tensor(dec.action), torch.as_tensor(dec.agent),
                       torch.as_tensor(dec.gstate), torch.as_tensor(dec.scenario))

    def to(self, device: torch.device | str) -> Tensors:
        return Tensors(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def __getitem__(self, idx: torch.Tensor) -> Tensors:
        return Tensors(self.obs[idx], self.mask[idx], self.action[idx], self.agent[idx],
                       self.gstate[idx], self.scenario[idx])


@torch.no_grad()
def evaluate_actions(model: ActorCritic, t: Tensors, chunk: int = 65_536):
    """Log-probabilities of the taken actions and values, in chunks, without gradients."""
    logp, value = [], []
    for s in range(0, len(t.action), chunk):
        part = t[torch.arange(s, min(s + chunk, len(t.action)), device=t.action.device)]
        logp.append(model.dist(part.obs, part.mask, part.agent).log_prob(part.action))
        value.append(model.value(part.obs, part.agent, part.gstate))
    return torch.cat(logp), torch.cat(value)


@dataclass
class ExpertTerm:
    """The expert buffer's tensors for one update: each transition's weight
    ``lambda * keep`` (``lambda`` of its agent, ``(n,)``, or of its scenario and agent,
    ``(S, n)``; ``keep``: the value filter) and its log-probability under the policy at the
    start of the update."""

    expert: Tensors
    weight: torch.Tensor
    logp_old: torch.Tensor
    keep: torch.Tensor

    @staticmethod
    def prepare(model: ActorCritic, cfg: TrainConfig, expert: Tensors, expert_ret: torch.Tensor,
                lam: torch.Tensor) -> ExpertTerm:
        """Evaluate the expert buffer once, before the update's first minibatch."""
        logp_old, value = evaluate_actions(model, expert)
        keep = (expert_ret > value).float() if cfg.value_filter else torch.ones_like(value)
        weight = lam[expert.scenario, expert.agent] if lam.dim() == 2 else lam[expert.agent]
        return ExpertTerm(expert, weight * keep, logp_old, keep)

    def loss(self, model: ActorCritic, cfg: TrainConfig, idx: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """``mean(lambda_i * keep * L_expert)`` over the expert rows ``idx`` (one minibatch)."""
        e = self.expert[idx]
        e_logp = model.dist(e.obs, e.mask, e.agent).log_prob(e.action)
        if cfg.expert_loss == "bc":
            per = -e_logp
        else:
            per = -torch.clamp(torch.exp(e_logp - self.logp_old[idx]), max=1 + cfg.clip)
        e_loss = (self.weight[idx] * per).mean()
        return e_loss, {"loss_expert": e_loss.item(), "expert_nll": -e_logp.mean().item()}


def hybrid_update(model: ActorCritic, optim: torch.optim.Optimizer, cfg: TrainConfig,
                  gen: torch.Generator, rollout: Tensors, old_logp: torch.Tensor,
                  adv: torch.Tensor, ret: torch.Tensor, expert: Tensors | None = None,
                  expert_ret: torch.Tensor | None = None,
                  lam: torch.Tensor | None = None) -> dict[str, float]:
    """``epochs`` passes of minibatch SGD on the hybrid loss; returns mean loss statistics.
    The tensors live on the model's device; ``gen`` (CPU) draws the minibatch indices, which
    move to the device, so a seed samples the same minibatches on any device and no
    statistic leaves the device before the end."""
    n = len(rollout.action)
    device = rollout.action.device
    use_expert = expert is not None and lam is not None and len(expert.action) > 0
    term = ExpertTerm.prepare(model, cfg, expert, expert_ret, lam) if use_expert else None
    adv = (adv - adv.mean()) / (adv.std() + 1e-8) if n > 1 else adv
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, cfg.minibatch):
            idx = perm[start:start + cfg.minibatch]
            loss = torch.zeros((), device=device)
            stats = {}
            if cfg.uses_rl:
                b = rollout[idx]
                dist = model.dist(b.obs, b.mask, b.agent)
                logp = dist.log_prob(b.action)
                ratio = torch.exp(logp - old_logp[idx])
                pg = -torch.min(ratio * adv[idx],
                                ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv[idx]).mean()
                v_loss = 0.5 * (model.value(b.obs, b.agent, b.gstate) - ret[idx]).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                stats.update(loss_pg=pg, loss_v=v_loss, entropy=entropy,
                             approx_kl=(old_logp[idx] - logp).mean())
            if term is not None:
                e_idx = torch.randint(len(expert.action), (cfg.expert_batch,),
                                      generator=gen).to(device)
                e_loss, e_stats = term.loss(model, cfg, e_idx)
                loss = loss + e_loss
                stats.update(e_stats)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optim.step()
            for key, value in stats.items():  # float64 sums of the float32 values
                value = value.detach() if torch.is_tensor(value) else torch.tensor(value)
                sums[key] = sums.get(key, 0.0) + value.double()
            count += 1
    out = {key: value.item() / max(count, 1) for key, value in sums.items()}
    if term is not None:
        out["expert_kept"] = float(term.keep.mean())
        out["lambda_mean"] = float(lam.mean())
    return out


def masked_greedy(model: ActorCritic, obs: np.ndarray, mask: np.ndarray,
                  agent: np.ndarray) -> np.ndarray:
    """Most likely valid action of each row (computed on the model's device)."""
    device = model_device(model)
    with torch.no_grad():
        logits = model.logits(torch.as_tensor(obs, device=device),
                              torch.as_tensor(mask, device=device),
                              torch.as_tensor(agent, device=device))
    return logits.argmax(dim=1).cpu().numpy()
