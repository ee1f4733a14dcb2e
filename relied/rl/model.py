"""Masked discrete policy and value network for all agents at once, with per-agent, grouped
or shared weights.

Every network holds ``G`` weight sets; a batch of agent rows (any agents, any envs) goes
through one forward call, rows sorted by group and each group's rows through its own weights
(one matmul chain per group present), so the cost grows linearly with the number of rows.

* ``share='none'``: ``G = n_agents`` (agent ``i`` uses set ``i mod G``; decentralised, as in
  the paper);
* ``share='group'``: ``G = n_groups`` (agent ``i`` uses set ``i mod G``);
* ``share='all'``: ``G = 1`` and a learned agent-id embedding (``i mod n_agents``) is appended
  to the input.

The actor scores each out-edge slot with the same small network applied to
``[global features, that slot's features]`` (the no-op gets logit 0): it ranks edges by what
they look like (detour, load, heading), not by slot position, so it transfers across nodes,
trips and cities, whatever their maximum out-degree. Invalid actions get ``-1e9`` logits (the
mask is applied here, not by PPO). The value network reads the whole observation; with
``state_dim > 0`` (MAPPO) also the global state of the env at that step: vehicles / storage of
every edge (``info["state"]`` of the training env).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical

from relied.env.core import SLOT_FEATURES

MASKED_LOGIT = -1e9
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """A requested torch device this machine cannot provide; the message is one line."""


def resolve_device(spec: str) -> torch.device:
    """``auto``: CUDA when ``torch.cuda.is_available()``, else the CPU; ``cpu``; ``cuda``
    (:class:`DeviceError` when CUDA is not available)."""
    if spec not in DEVICES:
        raise DeviceError(f"--device: unknown device '{spec}'; use auto, cpu or cuda")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        build = "with" if torch.backends.cuda.is_built() else "without"
        raise DeviceError(f"--device cuda: CUDA is not available here (torch "
                          f"{torch.__version__}, built {build} CUDA); use --device cpu or auto")
    return torch.device(spec)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class GroupMLP(nn.Module):
    """``G`` independent tanh MLPs; row ``r`` of the input goes through MLP ``group[r]``."""

    def __init__(self, groups: int, d_in: int, hidden: int, d_out: int, out_gain: float):
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(((d_in, hidden), (hidden, hidden), (hidden, d_out))):
            bound = (out_gain if i == 2 else 1.0) / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(groups, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(groups, b)))

    def _mlp(self, x: torch.Tensor, g: int) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w[g] + b[g]
            if i < last:
                x = torch.tanh(x)
        return x

    def forward(self, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        if self.weights[0].shape[0] == 1:
            return self._mlp(x, 0)
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=self.weights[0].shape[0]).tolist()
        out = torch.empty(len(x), self.weights[-1].shape[2], device=x.device, dtype=x.dtype)
        start = 0
        for g, c in enumerate(counts):  # one matmul chain per group present: linear in rows
            if c:
                rows = order[start:start + c]
                out[rows] = self._mlp(x[rows], g)
                start += c
        return out


class ActorCritic(nn.Module):
    """Policy ``pi(a | obs_i)`` and value ``V(obs_i[, global])`` for rows of (obs, mask, agent)."""

    def __init__(self, obs_dim: int, k: int, n_agents: int, share: str = "none",
                 n_groups: int = 4, hidden: int = 64, id_embed: int = 8,
                 state_dim: int = 0):
        super().__init__()
        self.kwargs = dict(obs_dim=obs_dim, k=k, n_agents=n_agents, share=share,
                           n_groups=n_groups, hidden=hidden, id_embed=id_embed,
                           state_dim=state_dim)
        self.obs_dim, self.k, self.n_agents, self.share = obs_dim, k, n_agents, share
        self.groups = {"none": n_agents, "group": n_groups, "all": 1}[share]
        self.embed = nn.Embedding(n_agents, id_embed) if share == "all" and id_embed else None
        d_id = id_embed if self.embed is not None else 0
        self.n_global = obs_dim - SLOT_FEATURES * k
        self.state_dim = state_dim
        self.actor = GroupMLP(self.groups, self.n_global + SLOT_FEATURES + d_id, hidden, 1,
                              out_gain=0.01)
        self.value_net = GroupMLP(self.groups, obs_dim + d_id + state_dim, hidden, 1,
                                  out_gain=1.0)

    def _ids(self, agent: torch.Tensor) -> torch.Tensor | None:
        return self.embed(agent % self.n_agents) if self.embed is not None else None

    def logits(self, obs: torch.Tensor, mask: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """``(B, K+1)`` masked logits; ``K`` is read from the mask (any city)."""
        b, k = obs.shape[0], mask.shape[1] - 1
        slots = obs[:, self.n_global:].reshape(b, k, SLOT_FEATURES)
        parts = [obs[:, None, : self.n_global].expand(b, k, self.n_global), slots]
        ids = self._ids(agent)
        if ids is not None:
            parts.append(ids[:, None, :].expand(b, k, ids.shape[1]))
        x = torch.cat(parts, dim=2).reshape(b * k, -1)
        scores = self.actor(x, (agent % self.groups).repeat_interleave(k)).reshape(b, k)
        logits = torch.cat([scores, scores.new_zeros(b, 1)], dim=1)
        return logits.masked_fill(~mask, MASKED_LOGIT)

    def dist(self, obs: torch.Tensor, mask: torch.Tensor, agent: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits(obs, mask, agent))

    def value(self, obs: torch.Tensor, agent: torch.Tensor,
              gstate: torch.Tensor | None = None) -> torch.Tensor:
        parts = [obs]
        ids = self._ids(agent)
        if ids is not None:
            parts.append(ids)
        if self.state_dim:
            parts.append(gstate)
        return self.value_net(torch.cat(parts, dim=1), agent % self.groups).squeeze(1)
