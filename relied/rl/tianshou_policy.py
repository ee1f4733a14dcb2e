"""Tianshou objects at the seams: trained models as Tianshou policies, demonstrations as a
Tianshou ``ReplayBuffer`` (HDF5).

Tianshou's multi-agent observation is ``Batch(agent_id, obs, mask)`` (what its
``PettingZooEnv`` emits); here ``agent_id`` is the PettingZoo name ``vehicle_<i>`` (string
keys, as ``MultiAgentPolicy`` needs; in HDF5 files the integer ``i``, since HDF5 holds no
unicode arrays without pickling), ``obs`` the relied observation and ``mask`` the core's
action mask.

* :class:`ModelActor` / :class:`ModelCritic`: a relied :class:`ActorCritic` as Tianshou
  actor (masked logits) and critic, reading ``agent_id`` from the batch or bound to one agent;
* :func:`to_multiagent_policy`: a ``MultiAgentPolicy`` with one ``DiscreteActorPolicy`` per
  agent; agents of one weight set (``--share none``: one each; ``group``: ``i mod G``;
  ``all``: every agent) share one actor network; greedy by default, so it acts exactly as
  :class:`relied.rl.policy.TrainedPolicy`;
* :func:`expert_buffer` / :func:`save_demo_buffer` / :func:`load_demo_buffer`: the expert
  buffer (decision transitions of demonstration batches) as a Tianshou ``ReplayBuffer`` with
  ``obs``, ``act``, ``rew`` (the decision's reward), ``terminated`` (the agent's last
  decision), ``obs_next`` and ``info.ret`` (discounted return from there, for the critic
  filter), ``info.t`` (simulator step) and ``info.scenario`` (index of the demonstrated
  scenario, for per-scenario ``lambda``), saved with ``save_hdf5``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from relied.experts.demos import DemoFileError
from relied.rl.demos import ExpertSet
from relied.rl.model import ActorCritic
from relied.rl.rollout import Decisions


def agent_index(agent_id) -> torch.Tensor:
    """Vehicle indices of a batch's ``agent_id`` (ints, or ``vehicle_<i>`` names)."""
    ids = np.asarray(agent_id)
    if ids.dtype.kind in "iu":
        return torch.as_tensor(ids.astype(np.int64))
    return torch.as_tensor([int(str(a).rsplit("_", 1)[-1]) for a in ids.ravel()],
                           dtype=torch.long)


def _rows(obs, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    return (torch.as_tensor(np.asarray(obs.obs), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(obs.mask), dtype=torch.bool, device=device))


class ModelActor(nn.Module):
    """Masked logits of a relied model for ``Batch(agent_id, obs, mask)`` observations;
    ``agent`` binds it to one vehicle (then ``agent_id`` is not read)."""

    def __init__(self, model: ActorCritic, agent: int | None = None):
        super().__init__()
        self.model, self.agent = model, agent

    def get_output_dim(self) -> int:
        return self.model.k + 1

    def forward(self, obs, state=None, info=None):
        x, mask = _rows(obs, self.model)
        agent = torch.full((len(x),), self.agent, dtype=torch.long) if self.agent is not None \
            else agent_index(obs.agent_id)
        agent = agent.to(x.device)
        return self.model.logits(x, mask, agent), state


class ModelCritic(nn.Module):
    """The relied model's value ``V(obs_i)`` for ``Batch(agent_id, obs, mask)`` rows."""

    def __init__(self, model: ActorCritic):
        super().__init__()
        self.model = model

    def forward(self, obs, **_):
        x, _mask = _rows(obs, self.model)
        return self.model.value(x, agent_index(obs.agent_id).to(x.device))


def action_space(model: ActorCritic) -> gym.spaces.Discrete:
    return gym.spaces.Discrete(model.k + 1)


def agent_name(i: int) -> str:
    return f"vehicle_{i}"


def to_multiagent_policy(model: ActorCritic, n_agents: int | None = None,
                         deterministic: bool = True):
    """A Tianshou ``MultiAgentPolicy`` over agents ``vehicle_0 ...`` (default: the
    trained agents): one ``DiscreteActorPolicy`` per agent, one actor network per weight set
    (``share='all'`` binds each agent's id, since its embedding is an input)."""
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.algorithm.multiagent.marl import MultiAgentPolicy

    model = model.eval()
    n = n_agents or model.n_agents
    space = action_space(model)
    actors: dict[int, ModelActor] = {}
    policies = {}
    for i in range(n):
        key = i % model.n_agents if model.share == "all" else i % model.groups
        actor = actors.setdefault(key, ModelActor(model, agent=i % model.n_agents
                                                  if model.share == "all" else key))
        policies[agent_name(i)] = DiscreteActorPolicy(actor=actor, deterministic_eval=deterministic,
                                          action_space=space)
    return MultiAgentPolicy(policies).eval()


# ---- demonstrations as a Tianshou ReplayBuffer ---------------------------------------------
def expert_buffer(expert: ExpertSet):
    """The expert set's decision transitions as a Tianshou ``ReplayBuffer`` (rows sorted by
    agent, then time, as in relied's buffers)."""
    from tianshou.data import Batch, ReplayBuffer

    dec = expert.dec
    n = len(dec)
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    nxt = np.where(dec.end, np.arange(n), nxt)  # a last decision points to itself

    def obs_at(rows):
        return Batch(agent_id=dec.agent[rows], obs=dec.obs[rows], mask=dec.mask[rows])

    idx = np.arange(n)
    data = Batch(obs=obs_at(idx), act=dec.action, rew=dec.reward, terminated=dec.end.copy(),
                 truncated=np.zeros(n, dtype=bool), done=dec.end.copy(), obs_next=obs_at(nxt))
    buf = ReplayBuffer.from_data(**{k: data[k] for k in data.get_keys()})
    data.info = Batch(ret=expert.ret.astype(np.float64), t=dec.t, scenario=dec.scenario)
    buf.set_batch(data)
    return buf


def buffer_decisions(buf) -> tuple[Decisions, np.ndarray]:
    """Decision transitions and discounted returns of an expert ``ReplayBuffer``."""
    data = buf[buf.sample_indices(0)]
    obs = np.asarray(data.obs.obs, dtype=np.float32)
    dec = Decisions(obs=obs, mask=np.asarray(data.obs.mask, dtype=bool),
                    action=np.asarray(data.act, dtype=np.int64),
                    reward=np.asarray(data.rew, dtype=np.float32),
                    agent=agent_index(data.obs.agent_id).numpy(),
                    t=np.asarray(data.info.t, dtype=np.int64),
                    end=np.asarray(data.terminated, dtype=bool),
                    gstate=np.zeros((len(obs), 0), dtype=np.float32),
                    scenario=np.asarray(data.info.get("scenario", np.zeros(len(obs))),
                                        dtype=np.int64))
    return dec, np.asarray(data.info.ret, dtype=np.float64)


def save_demo_buffer(expert: ExpertSet, path: Path) -> Path:
    """Write the expert set as a Tianshou ``ReplayBuffer`` HDF5 file (``save_hdf5``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    expert_buffer(expert).save_hdf5(str(path))
    return path


#: the only globals a Tianshou buffer file pickles: its numpy RandomState and the arrays in it
_SAFE_GLOBALS = {("numpy.random._pickle", "__randomstate_ctor"),
                 ("numpy.random._pickle", "__bit_generator_ctor"),
                 ("numpy.random._mt19937", "MT19937"), ("numpy", "ndarray"), ("numpy", "dtype"),
                 ("numpy.core.multiarray", "_reconstruct"),
                 ("numpy._core.multiarray", "_reconstruct")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _check_pickles(path: Path) -> None:
    """``load_hdf5`` unpickles the entries that are not plain arrays: refuse a file whose
    pickles name anything but plain values and Tianshou's own numpy random state."""
    import h5py

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and \
                obj.attrs.get("__data_type__") not in ("ndarray", "Tensor"):
            _SafeUnpickler(io.BytesIO(obj[()].tobytes())).load()

    with h5py.File(path, "r") as f:
        f.visititems(visit)


def load_demo_buffer(path: Path, obs_dim: int | None = None, k: int | None = None):
    """Read a demo ``ReplayBuffer`` HDF5 file; :class:`DemoFileError` (one line) if it is
    missing, unsafe, not such a buffer or sized for another environment."""
    from tianshou.data import ReplayBuffer

    path = Path(path)
    if not path.is_file():
        raise DemoFileError(f"demo buffer '{path}' is missing; export it with "
                            "relied.rl.tianshou_policy.save_demo_buffer")
    try:
        _check_pickles(path)
        buf = ReplayBuffer.load_hdf5(str(path))
        dec, ret = buffer_decisions(buf)
        rows = len(dec)
        if not rows or any(len(getattr(dec, f)) != rows for f in ("obs", "mask", "agent")) \
                or len(ret) != rows or dec.obs.ndim != 2 or dec.mask.ndim != 2:
            raise ValueError("ragged or empty fields")
        if (dec.action < 0).any() or (dec.action >= dec.mask.shape[1]).any() or \
                not dec.mask[np.arange(rows), dec.action].all():
            raise ValueError("actions outside their masks")
    except Exception as exc:  # noqa: BLE001 - any unreadable buffer: one clear error
        raise DemoFileError(f"demo buffer '{path}' is corrupt or unsafe ({type(exc).__name__});"
                            " export it again") from None
    if (obs_dim is not None and dec.obs.shape[1] != obs_dim) or \
            (k is not None and dec.mask.shape[1] != k + 1):
        raise DemoFileError(f"demo buffer '{path}' has {dec.obs.shape[1]} observation features "
                            f"and {dec.mask.shape[1]} actions; this environment has {obs_dim} "
                            f"and {(k or 0) + 1}: export it from this environment")
    return buf
