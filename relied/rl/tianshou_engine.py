"""The Tianshou engine (``relied train --engine tianshou``): Tianshou's collector, buffer and
``OnPolicyTrainer`` over the decision AEC env (:mod:`relied.rl.tianshou_env`, wrapped in
Tianshou's ``PettingZooEnv``), with the hybrid objective as a subclass of Tianshou's ``PPO``.

* :class:`DecisionAdvantages` (a mixin over Tianshou's actor-critic algorithms): returns and
  advantages per *decision*: an agent's reward until its next decision (rebuilt from the
  per-turn reward vectors), GAE over each agent's decisions (:func:`relied.rl.rollout.gae`,
  the fast engine's), the value after an agent's last decision 0. Tianshou's own
  per-transition GAE would chain different agents' turns.
* :class:`HybridPPO` (``reled``, ``leed``, ``ippo``): Tianshou's ``PPO`` loss on the agents'
  rollouts plus ``lambda_i(t) x L_expert`` on transitions drawn from an expert
  ``ReplayBuffer`` at each minibatch, the seam Tianshou's ``GAIL(PPO)`` uses. The expert
  term is :class:`relied.rl.hybrid_ppo.ExpertTerm`, the fast engine's code.
* ``tianshou:ppo`` / ``tianshou:a2c``: Tianshou's ``PPO`` / ``A2C`` unchanged but for the
  decision advantages; the action mask is applied by the actor (masked logits).

A run writes the fast engine's run folder (``config.json``, ``demos/``, ``metrics.csv``, ``tb/``
through Tianshou's logger, ``policy.pt`` that ``relied eval`` reads, ``summary.json``,
plots) plus ``demos/expert_buffer.h5``; it has no checkpoints (no ``--resume``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tianshou.algorithm import A2C, PPO

from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.rollout import run_episode
from relied.rl.config import TrainConfig
from relied.rl.demos import DemoProvider, ExpertSet, demo_paths, load_expert_set, make_provider
from relied.rl.hybrid_ppo import ExpertTerm, Tensors
from relied.rl.model import ActorCritic
from relied.rl.policy import TrainedPolicy, save_policy
from relied.rl.rollout import Decisions, gae
from relied.rl.schedule import dtw_per_step, expert_weights
from relied.rl.tianshou_env import make_aec_vector_env
from relied.rl.tianshou_policy import (
    ModelActor,
    ModelCritic,
    action_space,
    agent_index,
    buffer_decisions,
    expert_buffer,
    save_demo_buffer,
)
from relied.rl.trainer import (
    CSV_FIELDS,
    TrainError,
    _fmt,
    discard_run_dir,
    new_run_dir,
    preflight,
    read_metrics,
    seed_everything,
)

ENGINE_ALGOS = ("reled", "leed", "ippo", "tianshou:ppo", "tianshou:a2c")


@dataclass
class EpisodeStats:
    """One finished episode of the last update's batch: simulator steps, metrics, each
    agent's return, decision nodes and arrival."""

    steps: int
    metrics: dict[str, float]
    agent_return: np.ndarray
    nodes: list[np.ndarray]
    arrived: np.ndarray


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
        value = v_s.numpy().astype(np.float64)
        adv = np.empty(rows)
        adv[order] = gae(SimpleNamespace(reward=reward[order], end=~same), value[order],
                         self.gamma, self.gae_lambda)
        batch.v_s = v_s
        batch.adv = torch.as_tensor(adv, dtype=torch.float32)
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
        return EpisodeStats(int(last.t), {k: float(last[k]) for k in
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
    minibatch loss PPO hands it."""

    def __init__(self, optim, algo: HybridPPO):
        self.optim, self.algo = optim, algo

    def step(self, loss: torch.Tensor, *args, **kwargs):
        a = self.algo
        idx = torch.as_tensor(a.expert_buffer.sample_indices(a.cfg.expert_batch))
        e_loss, stats = a.term.loss(a.model, a.cfg, idx)
        for key, value in stats.items():
            a.expert_stats[key] = a.expert_stats.get(key, 0.0) + value
        a.expert_stats["count"] = a.expert_stats.get("count", 0.0) + 1
        return self.optim.step(loss + e_loss, *args, **kwargs)


class HybridPPO(DecisionAdvantages, PPO):
    """Tianshou ``PPO`` plus RELED's weighted expert loss from an expert ``ReplayBuffer``.

    ``weights(episodes) -> lambda`` (one per agent) is asked once per update with the
    episodes of its batch; without an expert buffer it is plain PPO (``ippo``)."""

    def __init__(self, *, model: ActorCritic, cfg: TrainConfig, expert_buffer=None,
                 weights=None, **ppo):
        super().__init__(**ppo)
        self.model, self.cfg, self.expert_buffer, self.weights = model, cfg, expert_buffer, weights
        self.expert_stats: dict[str, float] = {}
        if expert_buffer is not None:
            dec, ret = buffer_decisions(expert_buffer)
            self.expert = Tensors.of(dec)
            self.expert_ret = torch.as_tensor(ret, dtype=torch.float32)

    def _update_with_batch(self, batch, batch_size, repeat):
        if self.expert_buffer is None:
            return super()._update_with_batch(batch, batch_size, repeat)
        self.lam = self.weights(self.episodes)
        self.term = ExpertTerm.prepare(self.model, self.cfg, self.expert, self.expert_ret,
                                       self.lam)
        self.expert_stats = {}
        plain = self.optim
        self.optim = _WithExpertLoss(plain, self)
        try:
            return super()._update_with_batch(batch, batch_size, repeat)
        finally:
            self.optim = plain


class TianshouRun:
    """One run of the Tianshou engine; build with :meth:`create`, then :meth:`run`."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, provider: DemoProvider | None,
                 progress: bool):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.provider = provider or make_provider(cfg, progress)
        seed_everything(cfg.seed)
        net = load_city(cfg.city)
        self.cores = [RoutingCore(net, cfg.scenario(seed=s)) for s in cfg.pool_seeds()]
        core = self.cores[0]
        self.model = ActorCritic(core.obs_dim, core.k, core.n, share=cfg.share,
                                 n_groups=cfg.n_groups, hidden=cfg.hidden,
                                 id_embed=cfg.id_embed)
        self.experts: list[ExpertSet] = []
        self.counters = {"iteration": 0, "env_steps": 0, "agent_steps": 0, "decisions": 0,
                         "wall_s": 0.0}
        self.dtw_km = np.full(core.n, np.nan)

    @classmethod
    def create(cls, cfg: TrainConfig, runs_root: Path, provider: DemoProvider | None = None,
               progress: bool = True) -> TianshouRun:
        if cfg.algo not in ENGINE_ALGOS:
            raise TrainError(f"--engine tianshou trains {', '.join(ENGINE_ALGOS)}; "
                             f"use --engine fast for {cfg.algo}")
        if cfg.regen_every or cfg.bound_every:
            raise TrainError("--engine tianshou has no --regen-every/--bound-every; "
                             "use --engine fast")
        cfg = preflight(cfg).model_copy(update={"engine": "tianshou"})
        run_dir = new_run_dir(runs_root, cfg)
        try:
            run = cls(cfg, run_dir, provider, progress)
            cfg.save(run_dir / "config.json")
        except BaseException:
            discard_run_dir(run_dir, runs_root)
            raise
        run.runs_root = Path(runs_root)
        return run

    def _load_demos(self):
        if not self.cfg.uses_experts:
            return None
        for core in self.cores:
            store = self.run_dir / "demos" / f"seed-{core.scenario.seed}"
            paths = demo_paths(Path(self.cfg.demos_dir)) if self.cfg.demos_dir \
                else self.provider(core.scenario, store)
            self.experts.append(load_expert_set(paths, core, self.cfg.gamma,
                                                accepted_only=self.cfg.algo == "reled"))
        both = ExpertSet(Decisions.concat([e.dec for e in self.experts]),
                         np.concatenate([e.ret for e in self.experts]), [], np.zeros(0))
        save_demo_buffer(both, self.run_dir / "demos" / "expert_buffer.h5")
        return expert_buffer(both)

    def _weights(self, episodes: list[EpisodeStats]) -> torch.Tensor:
        """``lambda_i(t)`` as in the fast engine, from this iteration's episodes."""
        cfg, core = self.cfg, self.cores[0]
        j = self.counters["iteration"] % len(self.cores)
        agent_return = np.mean([e.agent_return for e in episodes], axis=0)
        if cfg.weight == "dtw":
            ep, c = episodes[0], self.cores[j]
            for i in range(core.n):
                nodes = ep.nodes[i]
                if ep.arrived[i]:
                    nodes = np.append(nodes, c.dest[i])
                self.dtw_km[i] = dtw_per_step(c.xy[nodes] / 1000.0,
                                              self.experts[j].routes_km[i]) \
                    if len(nodes) else np.nan
        lam = expert_weights(cfg.weight, self.counters["iteration"], lambda0=cfg.lambda0,
                             lambda_min=cfg.lambda_min, lambda_max=cfg.lambda_max,
                             decay=cfg.lambda_decay, dtw_km=self.dtw_km,
                             dtw_scale_km=cfg.dtw_scale_km, agent_return=agent_return,
                             expert_return=self.experts[j].agent_return,
                             return_temp=cfg.return_temp, n=core.n)
        return torch.as_tensor(lam, dtype=torch.float32)

    def algorithm(self, experts=None):
        from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
        from tianshou.algorithm.optim import AdamOptimizerFactory

        cfg = self.cfg
        common = dict(policy=DiscreteActorPolicy(actor=ModelActor(self.model),
                                                 deterministic_eval=True,
                                                 action_space=action_space(self.model)),
                      critic=ModelCritic(self.model),
                      optim=AdamOptimizerFactory(lr=cfg.lr, eps=1e-5),
                      vf_coef=0.5 * cfg.vf_coef,  # Tianshou's value loss has no 1/2
                      ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                      gae_lambda=cfg.gae_lambda, gamma=cfg.gamma, max_batchsize=4096)
        if cfg.algo == "tianshou:a2c":
            return TianshouA2C(**common)
        if cfg.algo == "tianshou:ppo":
            return TianshouPPO(eps_clip=cfg.clip, **common)
        return HybridPPO(model=self.model, cfg=cfg, expert_buffer=experts,
                         weights=self._weights, eps_clip=cfg.clip, **common)

    def run(self) -> dict:
        try:
            return self._run()
        except BaseException:
            discard_run_dir(self.run_dir, self.runs_root)
            raise

    def _run(self) -> dict:
        from tianshou.data import Collector, VectorReplayBuffer
        from tianshou.trainer import OnPolicyTrainer, OnPolicyTrainerParams
        from tianshou.utils import TensorboardLogger
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg, core = self.cfg, self.cores[0]
        algo = self.algorithm(self._load_demos())
        venv = make_aec_vector_env([c.scenario for c in self.cores], cfg.n_envs, cfg.vector)
        per_env = core.n * min(core.scenario.n_steps, 256) + 1
        buffer = VectorReplayBuffer(per_env * cfg.n_envs, cfg.n_envs)
        collector = Collector(algo, venv, buffer)
        logger = TensorboardLogger(SummaryWriter(str(self.run_dir / "tb")))
        trainer = OnPolicyTrainer(algo, OnPolicyTrainerParams(
            training_collector=collector, max_epochs=10**9, epoch_num_steps=1,
            collection_step_num_env_steps=None, collection_step_num_episodes=cfg.n_envs,
            update_step_num_repetitions=1 if cfg.algo == "tianshou:a2c" else cfg.epochs,
            batch_size=cfg.minibatch, logger=logger, verbose=False, show_progress=False,
            multi_agent_return_reduction=lambda r: np.asarray(r).mean(axis=1)))
        csv_path = self.run_dir / "metrics.csv"
        bar = tqdm(total=cfg.total_steps, unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            trainer.reset()
            while self.counters["env_steps"] < cfg.total_steps:
                start = time.perf_counter()
                epoch = trainer.execute_epoch()
                row = self._row(algo, epoch, time.perf_counter() - start)
                new = not csv_path.exists()
                with open(csv_path, "a", newline="") as f:
                    w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
                bar.set_postfix(ret=f"{row['return']:.2f}", tt=f"{row['mean_travel_time']:.0f}s",
                                refresh=False)
                bar.update(min(row["env_steps"], cfg.total_steps) - bar.n)
        finally:
            bar.close()
            venv.close()
            logger.finalize()
        return self.finish()

    def _row(self, algo, epoch, wall: float) -> dict:
        episodes = algo.episodes
        steps = sum(e.steps for e in episodes)
        c = self.counters
        c["iteration"] += 1
        c["env_steps"] += steps
        c["agent_steps"] += steps * self.cores[0].n
        c["decisions"] += algo.decisions
        c["wall_s"] += wall
        row: dict = dict(c)
        row["return"] = float(np.mean([e.agent_return.mean() for e in episodes]))
        for key in ("mean_travel_time", "p95_travel_time", "arrival_rate"):
            row[key] = float(np.mean([e.metrics[key] for e in episodes]))
        losses = epoch.training_stat.get_loss_stats_dict() if epoch.training_stat else {}
        for ours, theirs in (("loss_pg", "actor_loss"), ("loss_v", "vf_loss"),
                             ("entropy", "ent_loss")):
            if theirs in losses:
                row[ours] = float(losses[theirs])
        if isinstance(algo, HybridPPO) and algo.expert_buffer is not None:
            count = max(algo.expert_stats.get("count", 1.0), 1.0)
            row["loss_expert"] = algo.expert_stats.get("loss_expert", 0.0) / count
            row["expert_nll"] = algo.expert_stats.get("expert_nll", 0.0) / count
            row["expert_kept"] = float(algo.term.keep.mean())
            row["lambda_mean"] = float(algo.lam.mean())
            if self.cfg.weight == "dtw":
                row["dtw_km"] = float(np.nanmean(self.dtw_km))
        return row

    def finish(self) -> dict:
        """``policy.pt`` (the fast engine's format), the greedy policy's metrics, plots and
        ``summary.json``."""
        from relied.env.plot import plot_routes
        from relied.rl.plots import learning_curve

        cfg, c = self.cfg, self.counters
        save_policy(self.model, self.run_dir / "policy.pt", cfg.model_dump())
        core = RoutingCore(self.cores[0].net, self.cores[0].scenario, record_routes=True)
        episode = run_episode(core, TrainedPolicy(self.model))
        rows = read_metrics(self.run_dir)
        title = f"{cfg.algo} (tianshou) on {cfg.city}, {cfg.n_agents} agents, seed {cfg.seed}"
        if rows:
            learning_curve(rows, self.run_dir / "learning_curve.png", title)
        plot_routes(core, episode.routes, self.run_dir / "routes.png", title=title)
        summary = {
            "run_dir": str(self.run_dir), "algo": cfg.algo, "engine": "tianshou",
            "city": cfg.city, "agents": cfg.n_agents, "seed": cfg.seed,
            "iterations": c["iteration"], "env_steps": c["env_steps"],
            "agent_steps": c["agent_steps"], "decisions": c["decisions"],
            "wall_s": round(c["wall_s"], 2),
            "train_agent_steps_per_s": c["agent_steps"] / max(c["wall_s"], 1e-9),
            "final_return": episode.metrics["mean_return"],
            "mean_travel_time": episode.metrics["mean_travel_time"],
            "p95_travel_time": episode.metrics["p95_travel_time"],
            "arrival_rate": episode.metrics["arrival_rate"],
            "train_return": rows[-1]["return"] if rows else float("nan"),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train_tianshou(cfg: TrainConfig, runs_root: Path, provider: DemoProvider | None = None,
                   progress: bool = True) -> dict:
    """Create and run a Tianshou-engine run; returns its summary."""
    return TianshouRun.create(cfg, runs_root, provider, progress).run()
