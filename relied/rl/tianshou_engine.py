"""The Tianshou engine (``relied train --engine tianshou``): Tianshou's collector, buffer and
``OnPolicyTrainer`` over the decision AEC env (:mod:`relied.rl.tianshou_env`, wrapped in
Tianshou's ``PettingZooEnv``), with the hybrid objective as a subclass of Tianshou's ``PPO``.

* :class:`DecisionAdvantages` (a mixin over Tianshou's actor-critic algorithms): returns and
  advantages per *decision*: an agent's reward until its next decision (rebuilt from the
  per-turn reward vectors), GAE over each agent's decisions (:func:`relied.rl.rollout.gae`,
  the fast engine's), the value after an agent's last decision 0. Tianshou's own
  per-transition GAE would chain different agents' turns.
* :class:`HybridPPO` (every PPO algorithm of :data:`ALGO_SPECS` without a central value:
  ``reled`` and its ablations, ``leed``, ``ippo``): Tianshou's ``PPO`` loss on the agents'
  rollouts plus ``lambda_i(t) x L_expert`` on transitions drawn from an expert
  ``ReplayBuffer`` at each minibatch, the seam Tianshou's ``GAIL(PPO)`` uses. The expert
  term is :class:`relied.rl.hybrid_ppo.ExpertTerm`, the fast engine's code.
* ``tianshou:ppo`` / ``tianshou:a2c``: Tianshou's ``PPO`` / ``A2C`` unchanged but for the
  decision advantages; the action mask is applied by the actor (masked logits).

:class:`TianshouRun` is a :class:`relied.rl.trainer.Trainer` whose iteration is one epoch of
Tianshou's trainer (one episode per env, one update), so both engines share the run folder,
the demonstrations, the per-scenario ``lambda`` state (greedy probes of the demonstrated
scenarios with fresh trips), the checkpoints and ``--resume`` (Tianshou's optimizer *is* the
trainer's, so checkpoints hold its state), the held-out summary, and the trips: fresh every
iteration by default (:class:`relied.rl.tianshou_env.TripSchedule`). The run also writes
``demos/expert_buffer.h5`` (the expert ``ReplayBuffer``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tianshou.algorithm import A2C, PPO
from tianshou.algorithm.optim import OptimizerFactory

from relied.env.core import RoutingCore
from relied.rl.config import ALGO_SPECS, TrainConfig
from relied.rl.demos import DemoProvider, ExpertSet
from relied.rl.hybrid_ppo import ExpertTerm, Tensors
from relied.rl.model import ActorCritic
from relied.rl.rollout import Decisions, gae
from relied.rl.run_folder import RunFolder, TrainError
from relied.rl.tianshou_env import TripSchedule, make_aec_vector_env
from relied.rl.tianshou_policy import (
    ModelActor,
    ModelCritic,
    action_space,
    agent_index,
    buffer_decisions,
    expert_buffer,
    save_demo_buffer,
)
from relied.rl.trainer import Trainer

#: what this engine trains: PPO algorithms without a central value (and Tianshou's own)
ENGINE_ALGOS = tuple(name for name, spec in ALGO_SPECS.items()
                     if spec.ppo and not spec.central_value)


@dataclass
class EpisodeStats:
    """One finished episode of the last update's batch: scenario seed, simulator steps,
    metrics, each agent's return, decision nodes and arrival."""

    seed: int
    steps: int
    metrics: dict[str, float]
    agent_return: np.ndarray
    nodes: list[np.ndarray]
    arrived: np.ndarray

    def routes(self, core: RoutingCore) -> list[np.ndarray]:
        """Node route each agent drove (its decision nodes, then its destination if it
        arrived), as :func:`relied.rl.trainer.driven_routes` for the fast engine."""
        return [np.append(nodes, core.dest[i]) if self.arrived[i] else nodes
                for i, nodes in enumerate(self.nodes)]


class DecisionAdvantages:
    """Mixin for Tianshou's actor-critic algorithms: per-decision returns and GAE."""

    gamma: float
    gae_lambda: float
    critic: torch.nn.Module
    max_batchsize: int
    episodes: list[EpisodeStats]
    decisions: int

    def _add_returns_and_advantages(self, batch, buffer, indices):
        agent = agent_index(batch.obs.agent_id).numpy()
        rew = np.asarray(batch.rew, dtype=np.float64)
        rows = len(agent)
        if rows >= buffer.maxsize:
            raise TrainError(f"the Tianshou buffer ({buffer.maxsize} rows) filled up in one "
                             "iteration; use fewer agents or a shorter horizon")
        seg_end = buffer.next(indices) == indices  # last row of an episode (or of the data)
        seg = np.concatenate([[0], np.cumsum(seg_end)[:-1]])
        stop = np.flatnonzero(seg_end)
        order = np.lexsort((np.arange(rows), agent, seg))
        same = np.zeros(rows, dtype=bool)
        same[:-1] = (seg[order][1:] == seg[order][:-1]) & (agent[order][1:] == agent[order][:-1])
        nxt = np.empty(rows, dtype=np.int64)
        nxt[order] = np.where(same, np.roll(order, -1), stop[seg[order]] + 1)
        cum = np.concatenate([np.zeros((1, rew.shape[1])), np.cumsum(rew, axis=0)])
        reward = cum[nxt, agent] - cum[np.arange(rows), agent]
        with torch.no_grad():
            v_s = torch.cat([self.critic(mb.obs).flatten() for mb in
                             batch.split(self.max_batchsize, shuffle=False, merge_last=True)])
        value = v_s.cpu().numpy().astype(np.float64)
        adv = np.empty(rows)
        adv[order] = gae(SimpleNamespace(reward=reward[order], end=~same), value[order],
                         self.gamma, self.gae_lambda)
        batch.v_s = v_s
        batch.adv = torch.as_tensor(adv, dtype=torch.float32, device=v_s.device)
        batch.returns = batch.adv + v_s
        self.decisions = rows
        self.episodes = [self._episode(batch, rew, agent, np.arange(a, b + 1))
                         for a, b in zip(np.r_[0, stop[:-1] + 1], stop, strict=True)
                         if bool(batch.done[b])]
        return batch

    @staticmethod
    def _episode(batch, rew, agent, rows) -> EpisodeStats:
        last = batch.info[rows[-1]]
        node = np.asarray(batch.info.node)[rows]
        n = rew.shape[1]
        return EpisodeStats(int(last.seed), int(last.t), {k: float(last[k]) for k in
                                          ("mean_travel_time", "p95_travel_time",
                                           "arrival_rate")},
                            rew[rows].sum(axis=0), [node[agent[rows] == i] for i in range(n)],
                            np.asarray(last.arrived, dtype=bool))


class TianshouPPO(DecisionAdvantages, PPO):
    """Tianshou's PPO with per-decision advantages (``tianshou:ppo``)."""


class TianshouA2C(DecisionAdvantages, A2C):
    """Tianshou's A2C with per-decision advantages (``tianshou:a2c``)."""


class _WithExpertLoss:
    """Tianshou's optimizer with ``lambda x L_expert`` on a fresh expert sample added to each
    minibatch loss PPO hands it. The rows are drawn uniformly with replacement, as
    ``ReplayBuffer.sample_indices`` does, but from numpy's global generator, which checkpoints
    save (the buffer's own generator is not, so a resumed run would draw other rows)."""

    def __init__(self, optim, algo: HybridPPO):
        self.optim, self.algo = optim, algo

    def step(self, loss: torch.Tensor, *args, **kwargs):
        a = self.algo
        idx = torch.as_tensor(np.random.randint(len(a.expert_buffer), size=a.cfg.expert_batch),
                              device=a.expert_ret.device)
        e_loss, stats = a.term.loss(a.model, a.cfg, idx)
        for key, value in stats.items():
            a.expert_stats[key] = a.expert_stats.get(key, 0.0) + value
        a.expert_stats["count"] = a.expert_stats.get("count", 0.0) + 1
        return self.optim.step(loss + e_loss, *args, **kwargs)


class HybridPPO(DecisionAdvantages, PPO):
    """Tianshou ``PPO`` plus RELED's weighted expert loss from an expert ``ReplayBuffer``.

    Without experts it is plain PPO (``ippo``). :meth:`set_experts` gives the buffer and
    ``weights(episodes) -> lambda`` (``(n,)`` per agent or ``(S, n)`` per demonstrated
    scenario and agent), asked once per update with the episodes of its batch."""

    def __init__(self, *, model: ActorCritic, cfg: TrainConfig, **ppo):
        super().__init__(**ppo)
        self.model, self.cfg = model, cfg
        self.expert_buffer, self.weights = None, None
        self.expert_stats: dict[str, float] = {}

    def set_experts(self, buffer, weights: Callable[[list[EpisodeStats]], torch.Tensor]
                    ) -> None:
        dec, ret = buffer_decisions(buffer)
        device = next(self.model.parameters()).device
        self.expert_buffer, self.weights = buffer, weights
        self.expert = Tensors.of(dec).to(device)
        self.expert_ret = torch.as_tensor(ret, dtype=torch.float32, device=device)

    def _update_with_batch(self, batch, batch_size, repeat):
        if self.expert_buffer is None:
            return super()._update_with_batch(batch, batch_size, repeat)
        self.lam = self.weights(self.episodes).to(self.expert_ret.device)
        self.term = ExpertTerm.prepare(self.model, self.cfg, self.expert, self.expert_ret,
                                       self.lam)
        self.expert_stats = {}
        plain = self.optim
        self.optim = _WithExpertLoss(plain, self)
        try:
            return super()._update_with_batch(batch, batch_size, repeat)
        finally:
            self.optim = plain


class _GivenOptimizer(OptimizerFactory):
    """Hands Tianshou an existing torch optimizer (the trainer's, which its checkpoints
    save) instead of making one; it must cover exactly the parameters Tianshou asks for."""

    def __init__(self, optim: torch.optim.Optimizer):
        super().__init__()
        self.optim = optim

    def _create_optimizer_for_params(self, params) -> torch.optim.Optimizer:
        given = {id(p) for group in self.optim.param_groups for p in group["params"]}
        if {id(p) for p in params} != given:
            raise ValueError("the given optimizer covers other parameters than the algorithm")
        return self.optim


def check_engine(cfg: TrainConfig) -> None:
    """:class:`TrainError` (one line) for what the Tianshou engine cannot train."""
    if cfg.algo not in ENGINE_ALGOS:
        raise TrainError(f"--engine tianshou trains {', '.join(ENGINE_ALGOS)}; "
                         f"use --engine fast for {cfg.algo}")
    if cfg.regen_every or cfg.bound_every:
        raise TrainError("--engine tianshou has no --regen-every/--bound-every; "
                         "use --engine fast")
    if cfg.backend != "core":
        raise TrainError(f"--engine tianshou simulates with the core; use --engine fast for "
                         f"--backend {cfg.backend}")
    if cfg.device == "cuda":
        raise TrainError("--engine tianshou runs on the CPU; drop --device cuda "
                         "(or use --engine fast)")


class TianshouRun(Trainer):
    """A :class:`Trainer` whose iteration is one epoch of Tianshou's ``OnPolicyTrainer``
    (on the CPU: ``device`` ``auto`` means the CPU here); build with :meth:`create` (new run)
    or :meth:`resume`, then :meth:`run`."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, provider: DemoProvider | None = None,
                 progress: bool = True):
        if cfg.engine != "tianshou":
            raise TrainError(f"run '{folder.path}' was trained with --engine {cfg.engine}; "
                             "resume it with that engine")
        check_engine(cfg)
        super().__init__(cfg.model_copy(update={"device": "cpu"}), folder, provider, progress)
        self.algo = self.algorithm()

    @classmethod
    def create(cls, cfg: TrainConfig, runs_root: Path, provider: DemoProvider | None = None,
               progress: bool = True) -> TianshouRun:
        check_engine(cfg)
        return super().create(cfg.model_copy(update={"engine": "tianshou", "device": "cpu"}),
                              runs_root, provider, progress)

    def algorithm(self):
        """The Tianshou algorithm of ``cfg.algo`` over the trainer's model and optimizer."""
        from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy

        cfg = self.cfg
        common = dict(policy=DiscreteActorPolicy(actor=ModelActor(self.model),
                                                 deterministic_eval=True,
                                                 action_space=action_space(self.model)),
                      critic=ModelCritic(self.model), optim=_GivenOptimizer(self.optim),
                      vf_coef=0.5 * cfg.vf_coef,  # Tianshou's value loss has no 1/2
                      ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                      gae_lambda=cfg.gae_lambda, gamma=cfg.gamma, max_batchsize=4096)
        if cfg.algo == "tianshou:a2c":
            return TianshouA2C(**common)
        if cfg.algo == "tianshou:ppo":
            return TianshouPPO(eps_clip=cfg.clip, **common)
        return HybridPPO(model=self.model, cfg=cfg, eps_clip=cfg.clip, **common)

    def load_demos(self) -> None:
        """The trainer's demonstrations, also as the expert ``ReplayBuffer`` HybridPPO samples
        (written to ``demos/expert_buffer.h5``)."""
        super().load_demos()
        if not self.experts:
            return
        stacked = ExpertSet(Decisions.concat([e.dec for e in self.experts]),
                            np.concatenate([e.ret for e in self.experts]), [], np.zeros(0))
        save_demo_buffer(stacked, self.run_dir / "demos" / "expert_buffer.h5")
        self.algo.set_experts(expert_buffer(stacked), self._lambda)

    def _lambda(self, episodes: list[EpisodeStats]) -> torch.Tensor:
        """``lambda`` of every (scenario, agent), from the agents' latest routes in fixed
        scenario ``j`` as in the fast engine: a greedy probe (fresh trips) or this batch."""
        j = self.counters["iteration"] % len(self.cores)
        if self.cfg.fresh_trips:
            self._probe(j)
        else:
            self._observe_scenario(j, episodes[0].routes(self.cores[j]),
                                   np.mean([e.agent_return for e in episodes], axis=0))
        return self._expert_weights()

    def _run(self) -> dict:
        from tianshou.data import Collector, VectorReplayBuffer
        from tianshou.trainer import OnPolicyTrainer, OnPolicyTrainerParams

        self.load_demos()
        cfg, core = self.cfg, self.core
        venv = make_aec_vector_env(TripSchedule(cfg), cfg.n_envs, cfg.vector,
                                   start=self.counters["iteration"])
        per_env = core.n * min(core.scenario.n_steps, 256) + 1
        buffer = VectorReplayBuffer(per_env * cfg.n_envs, cfg.n_envs)
        trainer = OnPolicyTrainer(self.algo, OnPolicyTrainerParams(
            training_collector=Collector(self.algo, venv, buffer), max_epochs=10**9,
            epoch_num_steps=1, collection_step_num_env_steps=None,
            collection_step_num_episodes=cfg.n_envs,
            update_step_num_repetitions=1 if cfg.algo == "tianshou:a2c" else cfg.epochs,
            batch_size=cfg.minibatch, verbose=False, show_progress=False,
            multi_agent_return_reduction=lambda r: np.asarray(r).mean(axis=1)))
        try:
            trainer.reset()
            self._train_loop(lambda: self._epoch(trainer))
        finally:
            venv.close()
        return self.finish()

    def _epoch(self, trainer) -> dict:
        """One iteration: Tianshou's epoch (an episode per env, one update) and its row."""
        start = time.perf_counter()
        j = self.counters["iteration"] % len(self.cores)
        epoch = trainer.execute_epoch()
        algo, episodes = self.algo, self.algo.episodes
        steps = sum(e.steps for e in episodes)
        c = self.counters
        c["iteration"] += 1
        c["env_steps"] += steps
        c["agent_steps"] += steps * self.core.n
        c["decisions"] += algo.decisions
        c["wall_s"] += time.perf_counter() - start
        row: dict = dict(c)
        row["return"] = float(np.mean([e.agent_return.mean() for e in episodes]))
        for key in ("mean_travel_time", "p95_travel_time", "arrival_rate"):
            row[key] = float(np.mean([e.metrics[key] for e in episodes]))
        losses = epoch.training_stat.get_loss_stats_dict() if epoch.training_stat else {}
        for ours, theirs in (("loss_pg", "actor_loss"), ("loss_v", "vf_loss"),
                             ("entropy", "ent_loss")):
            if theirs in losses:
                row[ours] = float(losses[theirs])
        if self.experts:
            count = max(algo.expert_stats.get("count", 1.0), 1.0)
            row["loss_expert"] = algo.expert_stats.get("loss_expert", 0.0) / count
            row["expert_nll"] = algo.expert_stats.get("expert_nll", 0.0) / count
            row["expert_kept"] = float(algo.term.keep.mean())
            row["lambda_mean"] = float(algo.lam.mean())
            row["demos_fallback"] = float(sum(e.fallback for e in self.experts))
            if self.cfg.weight == "dtw":
                row["dtw_km"] = float(np.nanmean(self.dtw_km[j]))
        return row


def resume(run_dir: Path, provider: DemoProvider | None = None, progress: bool = True,
           device: str | None = None) -> Trainer:
    """Resume a run folder with the engine it was trained with (its ``config.json``); the
    arguments are :meth:`Trainer.resume`'s."""
    try:
        engine = TrainConfig.load(Path(run_dir) / "config.json").engine
    except (OSError, ValueError):
        engine = "fast"  # Trainer.resume names the problem
    cls = TianshouRun if engine == "tianshou" else Trainer
    return cls.resume(run_dir, provider, progress, device=device)
