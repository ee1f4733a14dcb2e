"""The training loop: sample, update, log, checkpoint; resumable exactly.

The run folder's files (layout, safety) are :class:`relied.rl.run_folder.RunFolder`'s; this
module holds the algorithm's side.

One iteration = one full episode in each of the ``n_envs`` envs, then one hybrid update. By
default every iteration draws fresh trips (:meth:`TrainConfig.training_seed`), and the
experts demonstrate ``demo_scenarios`` fixed scenarios; with ``train_seeds = N`` iteration
``t`` runs fixed scenario ``seed + t mod N``, which is also demonstrated. The expert weight
``lambda`` is kept per fixed scenario and agent, from the route the agent last drove there
(the rollout in that scenario, or with fresh trips a greedy probe episode of one fixed
scenario per iteration). A checkpoint after every
iteration holds model, optimizer, all RNG states, step counters and the lambda state; episodes
never straddle a checkpoint, so ``--resume`` continues from the last one without losing or
repeating data (later CSV rows and TensorBoard events are dropped)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from relied.env.cities import city_source, load_city
from relied.env.core import RoutingCore
from relied.env.rollout import run_episode
from relied.experts.bound import TrialUpdate
from relied.experts.learners import Learners
from relied.rl.config import TrainConfig
from relied.rl.demos import (
    DemoProvider,
    ExpertSet,
    demo_paths,
    load_expert_set,
    make_provider,
)
from relied.rl.envs import check_backend, make_vector_env
from relied.rl.hybrid_ppo import Tensors, evaluate_actions, hybrid_update
from relied.rl.model import ActorCritic, resolve_device
from relied.rl.policy import PolicyFileError, TrainedPolicy, on_cpu, save_policy
from relied.rl.rollout import Decisions, EpisodeRecord, collect, gae
from relied.rl.run_folder import CSV_FIELDS, RunFolder, TrainError, check_city
from relied.rl.schedule import dtw_per_step, expert_weights
from relied.rl.seeding import global_rng_state, restore_global_rng, seed_everything
from relied.rl.trial import learners_of, new_model, new_optimizer, trial_update

COUNTERS = {"iteration": int, "env_steps": int, "agent_steps": int, "decisions": int,
            "wall_s": float}


def preflight(cfg: TrainConfig) -> TrainConfig:
    """Check what a new run needs before its folder is made: the city file exists (stored as
    an absolute path with its SHA-256) and the expert model answers (``auto`` resolved)."""
    source = city_source(cfg.city)
    update: dict[str, object] = {"city": source.spec, "city_sha256": source.sha256()}
    if cfg.uses_experts and not cfg.demos_dir and cfg.experts != "shortest-path":
        from relied.agents.clients import ModelError, check_ollama_model, resolve_spec

        try:
            spec = resolve_spec(cfg.experts, cfg.ollama_host)
            if spec.startswith("ollama:"):
                check_ollama_model(spec, cfg.ollama_host)
        except ModelError as exc:
            raise TrainError(str(exc).replace("--model offline", "--experts offline")) from None
        update["experts"] = spec
    return cfg.model_copy(update=update)


class Trainer:
    """Trains one run; build with :meth:`create` (new run) or :meth:`resume`."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, provider: DemoProvider | None = None,
                 progress: bool = True):
        self.cfg, self.folder, self.progress = cfg, folder, progress
        self.run_dir = folder.path
        self.provider = provider or make_provider(cfg, progress)
        check_backend(cfg.vector)
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.net = net = load_city(cfg.city)
        # the fixed scenarios: the training pool, or (fresh trips) the demonstrated ones
        self.cores = [RoutingCore(net, cfg.scenario(seed=s)) for s in cfg.pool_seeds()]
        self.core, self.scenario = self.cores[0], self.cores[0].scenario
        n = self.core.n
        # built on the CPU: same init anywhere (relied.rl.trial.fresh_learners: the same)
        self.model = new_model(cfg, self.core).to(self.device)
        self.optim = new_optimizer(cfg, self.model)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.counters = {"iteration": 0, "env_steps": 0, "agent_steps": 0, "decisions": 0,
                         "wall_s": 0.0}
        # per scenario j and agent i: DTW of i's latest route in j to its expert route there,
        # and i's latest return in j (NaN until measured)
        self.dtw_km = np.full((len(self.cores), n), np.nan)
        self.agent_return = np.full((len(self.cores), n), np.nan)
        self.experts: list[ExpertSet] = []
        #: wall seconds of this process in sampling (env + policy), the policy's forward
        #: passes while sampling, and the update (benchmarks/train_throughput.py)
        self.timing = {"collect_s": 0.0, "policy_s": 0.0, "update_s": 0.0}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: TrainConfig, runs_root: Path, provider: DemoProvider | None = None,
               progress: bool = True) -> Trainer:
        cfg = preflight(cfg)
        folder = RunFolder.create(runs_root, cfg)
        try:
            trainer = cls(cfg, folder, provider, progress)
            folder.lock()
            folder.save_config(cfg)
        except BaseException:
            folder.discard_if_new()
            raise
        return trainer

    @classmethod
    def resume(cls, run_dir: Path, provider: DemoProvider | None = None,
               progress: bool = True, device: str | None = None) -> Trainer:
        """Continue a run from its last checkpoint; ``device`` overrides the stored one
        (checkpoints load on any device)."""
        run_dir = Path(run_dir)
        folder = RunFolder(run_dir)
        cfg = folder.load_config()
        check_city(cfg, run_dir, "restore the file, or start a new run")
        if cfg.engine == "tianshou" and cls is Trainer:
            raise TrainError(f"'{run_dir}' was trained with --engine tianshou; resume it with "
                             "relied.rl.tianshou_engine.resume (relied train --resume does)")
        if device is not None:
            cfg = cfg.model_copy(update={"device": device})
        trainer = cls(cfg, folder, provider, progress)
        folder.lock()
        try:
            ckpts = folder.checkpoints()
            if ckpts:
                trainer.load_checkpoint(ckpts[-1])
            folder.truncate_metrics(trainer.counters["iteration"])
        except BaseException:
            folder.release()
            raise
        return trainer

    # ---- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Model, optimizer, RNG states, counters and lambda inputs as tensors and plain
        numbers, readable with ``weights_only=True``."""
        state = {"model": on_cpu(self.model.state_dict()),
                 "optim": on_cpu(self.optim.state_dict()), "gen": self.gen.get_state(),
                 **global_rng_state(),
                 "counters": dict(self.counters),
                 "dtw_km": torch.from_numpy(np.array(self.dtw_km, dtype=np.float64)),
                 "agent_return": torch.from_numpy(np.array(self.agent_return, dtype=np.float64))}
        return self.folder.save_checkpoint(self.counters["iteration"], state,
                                           self.cfg.keep_checkpoints)

    def load_checkpoint(self, path: Path) -> None:
        """Restore a checkpoint; only tensors and plain numbers are unpickled (anything else,
        e.g. an object with a ``__reduce__`` payload, is refused without running it)."""
        try:
            state = self.folder.load_checkpoint(path)
            counters = {k: kind(state["counters"][k]) for k, kind in COUNTERS.items()}
            if any(v < 0 for v in counters.values()):
                raise ValueError("negative counter")
            dtw, ret = state["dtw_km"].numpy().copy(), state["agent_return"].numpy().copy()
            if dtw.shape != self.dtw_km.shape or ret.shape != self.agent_return.shape:
                raise ValueError("per-scenario, per-agent arrays of another size")
            self.model.load_state_dict(state["model"])
            self.optim.load_state_dict(state["optim"])
            self.gen.set_state(state["gen"])
            restore_global_rng(state)
            self.counters = counters
            self.dtw_km, self.agent_return = dtw, ret
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: one clear error
            raise PolicyFileError(f"checkpoint '{path}' is corrupt or unsafe "
                                  f"({type(exc).__name__}); delete it to resume from the one "
                                  "before") from None

    # ---- demonstrations -----------------------------------------------------------------
    def load_demos(self) -> None:
        """Load (or generate once, into ``demos/seed-<s>/``) the demos of every fixed scenario
        (the training pool, or the demonstrated scenarios with fresh trips); all go into one
        expert buffer whose rows know their scenario."""
        if not self.cfg.uses_experts:
            return
        self.experts = []
        self.demo_paths: list[list[Path]] = []
        for j, core in enumerate(self.cores):
            store = self._latest_store(core)
            if self.cfg.demos_dir:
                paths = demo_paths(Path(self.cfg.demos_dir))
            elif store.exists() and any(store.glob("*.json")):
                paths = demo_paths(store)
            else:  # judged under the untrained learners and their trial update
                paths = self.provider(core.scenario, store, learners=self.learners(j))
            self.demo_paths.append(paths)
            self.experts.append(load_expert_set(paths, core, self.cfg.gamma,
                                                accepted_only=self.cfg.spec.demos == "accepted"))
        self._stack_experts()

    def _latest_store(self, core: RoutingCore) -> Path:
        """The demo store in use at the current iteration: ``demos/seed-<s>/`` or, after a
        re-generation, its newest ``iter-<n>/`` sub-store with ``n`` <= the iteration."""
        base = self.run_dir / "demos" / f"seed-{core.scenario.seed}"
        regens = sorted(p for p in base.glob("iter-*")
                        if int(p.name[5:]) <= self.counters["iteration"] and any(p.glob("*.json")))
        return regens[-1] if regens else base

    def _stack_experts(self) -> None:
        for j, e in enumerate(self.experts):
            e.dec.scenario = np.full(len(e.dec), j, dtype=np.int64)
        self.expert_tensors = Tensors.of(Decisions.concat([e.dec for e in self.experts])
                                         ).to(self.device)
        self.expert_ret = torch.as_tensor(np.concatenate([e.ret for e in self.experts]),
                                          dtype=torch.float32, device=self.device)

    # ---- one iteration ------------------------------------------------------------------
    def _act(self, obs: np.ndarray, mask: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Sample the actions of all deciding agents of all envs: one forward pass on the
        device, the draw on the CPU generator (same actions for a seed on any device)."""
        start = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(self._logits(self.model, obs, mask, agent), 1).cpu()
            actions = torch.multinomial(probs, 1, generator=self.gen)[:, 0].numpy()
        self.timing["policy_s"] += time.perf_counter() - start
        return actions

    def _logits(self, model: ActorCritic, obs: np.ndarray, mask: np.ndarray,
                agent: np.ndarray) -> torch.Tensor:
        d = self.device
        return model.logits(torch.as_tensor(obs, dtype=torch.float32, device=d),
                            torch.as_tensor(mask, dtype=torch.bool, device=d),
                            torch.as_tensor(agent, dtype=torch.long, device=d))

    def _expert_weights(self) -> torch.Tensor | None:
        """``lambda`` of every (scenario, agent): ``(S, n)``, each demonstration row weighted
        by the agent and scenario it belongs to."""
        cfg = self.cfg
        if not cfg.uses_experts:
            return None
        if cfg.spec.weight == "one":
            return torch.ones(self.dtw_km.shape, device=self.device)
        lam = np.stack([
            expert_weights(cfg.weight, self.counters["iteration"], lambda0=cfg.lambda0,
                           lambda_min=cfg.lambda_min, lambda_max=cfg.lambda_max,
                           decay=cfg.lambda_decay, dtw_km=self.dtw_km[j],
                           dtw_scale_km=cfg.dtw_scale_km, agent_return=self.agent_return[j],
                           expert_return=self.experts[j].agent_return,
                           return_temp=cfg.return_temp, n=self.core.n)
            for j in range(len(self.cores))])
        return torch.as_tensor(lam, dtype=torch.float32, device=self.device)

    def _observe_scenario(self, j: int, routes: list[np.ndarray], returns: np.ndarray) -> None:
        """Record the agents' latest node routes and returns in fixed scenario ``j``."""
        core = self.cores[j]
        self.agent_return[j] = returns
        if self.experts:
            self.dtw_km[j] = [dtw_per_step(core.xy[r] / 1000.0, self.experts[j].routes_km[i])
                              for i, r in enumerate(routes)]

    def _probe(self, j: int) -> list[np.ndarray]:
        """Drive fixed scenario ``j`` with the current greedy policy (fresh-trip training never
        samples it): the agents' latest routes and returns there."""
        core = RoutingCore(self.net, self.cores[j].scenario, record_routes=True)
        episode = run_episode(core, TrainedPolicy(self.model))
        self.model.train()
        routes = [np.asarray(r) for r in episode.routes]
        self._observe_scenario(j, routes, episode.returns)
        return routes

    def policy_probs(self, obs: np.ndarray, mask: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """The learners' current action probabilities, for the stationarity bound."""
        with torch.no_grad():
            return torch.softmax(self._logits(self.model, obs, mask, agent), 1).cpu().numpy()

    def _lambda_of(self, j: int) -> Callable[[], np.ndarray]:
        """``lambda`` per agent of fixed scenario ``j``, read at each call (``lambda0``, or 1
        for BC, until every scenario's demonstrations are loaded)."""
        cfg, n = self.cfg, self.core.n

        def lam() -> np.ndarray:
            if len(self.experts) == len(self.cores):
                return self._expert_weights()[j].cpu().numpy()
            first = 1.0 if cfg.spec.weight == "one" else cfg.lambda0
            return np.clip(np.full(n, first), cfg.lambda_min, cfg.lambda_max)

        return lam

    def trial_update(self, j: int = 0) -> TrialUpdate:
        """The learners' trial update on a plan of fixed scenario ``j`` (the bound's divergence
        term, version 5; :mod:`relied.rl.trial`), weighted by that scenario's current
        ``lambda`` per agent (``lambda0`` before demonstrations are loaded)."""
        return trial_update(self.model, self.optim, self.cfg, self._lambda_of(j))

    def learners(self, j: int = 0, previous: ActorCritic | None = None) -> Learners:
        """What every critic judgement of fixed scenario ``j``'s plans is made under: the
        learners' current policy, ``previous`` (the policies before the last update, for the
        re-check) and their :meth:`trial_update` (bound version 5). Before the first update
        the learners are the seeded untrained ones, whose verdicts may be cached."""
        prev = None
        if previous is not None:
            def prev(obs, mask, agent):
                with torch.no_grad():
                    return torch.softmax(self._logits(previous, obs, mask, agent),
                                         1).cpu().numpy()

        untrained = self.counters["iteration"] == 0 and previous is None
        source = (f"{self.cfg.algo} learners of run {self.run_dir} at iteration "
                  f"{self.counters['iteration']}")
        return learners_of(self.model, self.optim, self.cfg, self._lambda_of(j), source,
                           previous=prev, cacheable=untrained)

    def _recheck_bound(self, j: int, previous: ActorCritic) -> dict[str, float]:
        """Recompute the stationarity bound of scenario ``j``'s demos under the learners'
        current policies and their trial update, with ``previous`` (the policies before the
        last update)."""
        from relied.experts.critic import recheck_batch

        learners = self.learners(j, previous)
        reports = [recheck_batch(p, learners, gamma=self.cfg.gamma, net=self.cores[j].net)
                   for p in self.demo_paths[j]]
        return {"bound_max": max(max(r.bounds) for r in reports),
                "bound_offenders": float(np.mean([len(r.offenders) for r in reports]))}

    def _regenerate(self, j: int, routes: list[np.ndarray]) -> None:
        """Ask the expert team again for scenario ``j``, with the learners' policies and their
        latest routes in the prompt; the new demos replace that scenario's expert set."""
        core = self.cores[j]
        behaviour = {i: core.net.osm_ids[r].tolist() for i, r in enumerate(routes)}
        store = (self.run_dir / "demos" / f"seed-{core.scenario.seed}"
                 / f"iter-{self.counters['iteration'] + 1:06d}")
        paths = self.provider(core.scenario, store, learners=self.learners(j),
                              behaviour=behaviour)
        self.demo_paths[j] = paths
        self.regen_usage = model_usage(paths)
        self.experts[j] = load_expert_set(paths, core, self.cfg.gamma,
                                          accepted_only=self.cfg.spec.demos == "accepted")
        self._stack_experts()

    def iterate(self, venv) -> dict[str, float]:
        """One iteration: an episode per env (fresh trips, or fixed scenario ``t mod N``), the
        agents' latest routes in one fixed scenario, then the hybrid update."""
        start = time.perf_counter()
        cfg = self.cfg
        it = self.counters["iteration"]
        j = it % len(self.cores)
        scenario = cfg.iteration_scenario(it)
        records = collect(venv, self._act, self.core.obs_dim, self.core.k,
                          {"scenario": scenario})
        update_start = time.perf_counter()
        self.timing["collect_s"] += update_start - start
        dec = Decisions.concat([r.dec for r in records])
        for r in records:
            r.dec = None  # type: ignore[assignment]  # the concatenation holds the rows
        batch = Tensors.of(dec).to(self.device)
        old_logp, value = evaluate_actions(self.model, batch)
        adv = gae(dec, value.cpu().numpy(), cfg.gamma, cfg.gae_lambda)
        adv_t = torch.as_tensor(adv, dtype=torch.float32, device=self.device)
        self.timing["update_s"] += time.perf_counter() - update_start
        routes: list[np.ndarray] = []
        if self.experts:
            if cfg.fresh_trips:
                routes = self._probe(j)
            else:
                routes = driven_routes(records[0], self.cores[j])
                self._observe_scenario(j, routes, np.mean([r.returns for r in records], axis=0))
        lam = self._expert_weights()
        update_start = time.perf_counter()
        recheck = bool(self.experts and cfg.bound_every and (it + 1) % cfg.bound_every == 0)
        previous = copy.deepcopy(self.model) if recheck else None
        stats = hybrid_update(self.model, self.optim, cfg, self.gen, batch, old_logp, adv_t,
                              adv_t + value,
                              self.expert_tensors if self.experts else None,
                              self.expert_ret if self.experts else None, lam)
        self.timing["update_s"] += time.perf_counter() - update_start
        steps = sum(r.steps for r in records)
        extra: dict[str, float] = {}
        if previous is not None:
            extra.update(self._recheck_bound(j, previous))
        if self.experts and cfg.regen_every and (it + 1) % cfg.regen_every == 0:
            self._regenerate(j, routes)
            extra["demos_regenerated"] = 1.0
            extra.update({f"model_{k}": float(v) for k, v in self.regen_usage.items()})
        c = self.counters
        c["iteration"] += 1
        c["env_steps"] += steps
        c["agent_steps"] += steps * self.core.n
        c["decisions"] += len(dec)
        c["wall_s"] += time.perf_counter() - start
        row = dict(c)
        row["return"] = float(np.mean([r.returns.mean() for r in records]))
        for key in ("mean_travel_time", "p95_travel_time", "arrival_rate"):
            row[key] = float(np.mean([r.metrics[key] for r in records]))
        row.update(stats)
        row.update(extra)
        if lam is not None:
            row["lambda_mean"] = float(lam.mean())
            row["demos_fallback"] = float(sum(e.fallback for e in self.experts))
        if cfg.weight == "dtw" and self.experts:
            row["dtw_km"] = float(np.nanmean(self.dtw_km[j]))
        return row

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the budget and :meth:`finish`; a new run that fails before its first
        checkpoint removes its folder."""
        try:
            return self._run()
        except BaseException:
            self.folder.discard_if_new()
            raise
        finally:
            self.folder.release()

    def _run(self) -> dict:
        self.load_demos()
        venv = self.vector_env()
        try:
            self._train_loop(lambda: self.iterate(venv))
        finally:
            venv.close()
        return self.finish()

    def vector_env(self):
        """The fast engine's vector env of the training scenario (:meth:`iterate` runs on it);
        its envs observe only the deciding agents, the rows ``collect`` stores."""
        cfg = self.cfg
        return make_vector_env(self.scenario, cfg.n_envs, cfg.vector,
                               with_state=cfg.spec.central_value, backend=cfg.backend,
                               decisions_only=True)

    def _train_loop(self, iterate: Callable[[], dict]) -> None:
        """Run ``iterate`` until the step budget; after each iteration its CSV row, then the
        checkpoint, the TensorBoard row (Tianshou's ``TensorboardLogger``) and the progress
        bar. Both engines train through this loop."""
        from tianshou.utils import TensorboardLogger
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.cfg
        logger = TensorboardLogger(SummaryWriter(str(self.run_dir / "tb"),
                                                 purge_step=self.counters["env_steps"] + 1))
        bar = tqdm(total=cfg.total_steps, initial=min(self.counters["env_steps"], cfg.total_steps),
                   unit="step", disable=not self.progress, dynamic_ncols=True)
        try:
            while self.counters["env_steps"] < cfg.total_steps:
                row = iterate()
                # the row first: a kill between the two leaves a row that resume drops
                self.folder.append_metrics(row)
                self.save_checkpoint()
                logger.write("train/env_step", row["env_steps"],
                             {k: row[k] for k in CSV_FIELDS if k in row})
                bar.set_postfix(ret=f"{row['return']:.2f}",
                                tt=f"{row['mean_travel_time']:.0f}s",
                                arr=f"{row['arrival_rate']:.2f}", refresh=False)
                bar.update(min(row["env_steps"], cfg.total_steps) - bar.n)
        finally:
            bar.close()
            logger.finalize()

    def finish(self) -> dict:
        """Write ``policy.pt``, the greedy policy's metrics on a training scenario and on
        held-out ones (beside shortest-path there), plots and ``summary.json``."""
        from relied.env.plot import plot_routes
        from relied.env.policies import ShortestPathPolicy
        from relied.rl.plots import learning_curve

        cfg = self.cfg
        save_policy(self.model, self.run_dir / "policy.pt", cfg.model_dump())
        core = RoutingCore(self.net, self.scenario, record_routes=True)
        episode = run_episode(core, TrainedPolicy(self.model))
        rows = self.folder.read_metrics()
        title = f"{cfg.algo} on {cfg.city}, {cfg.n_agents} agents, seed {cfg.seed}"
        if rows:
            learning_curve(rows, self.run_dir / "learning_curve.png", title)
        plot_routes(core, episode.routes, self.run_dir / "routes.png", title=title)
        c = self.counters
        summary = {
            "run_dir": str(self.run_dir), "algo": cfg.algo, "engine": cfg.engine,
            "city": cfg.city,
            "agents": cfg.n_agents, "seed": cfg.seed, "iterations": c["iteration"],
            "env_steps": c["env_steps"], "agent_steps": c["agent_steps"],
            "decisions": c["decisions"], "wall_s": round(c["wall_s"], 2),
            "train_agent_steps_per_s": c["agent_steps"] / max(c["wall_s"], 1e-9),
            "trips": "fresh" if cfg.fresh_trips else f"{cfg.train_seeds} fixed",
            "final_return": episode.metrics["mean_return"],
            "mean_travel_time": episode.metrics["mean_travel_time"],
            "p95_travel_time": episode.metrics["p95_travel_time"],
            "arrival_rate": episode.metrics["arrival_rate"],
            "train_return": rows[-1]["return"] if rows else float("nan"),
        }
        if cfg.heldout_seeds:
            learned, shortest = [], []
            for seed in cfg.heldout():
                sc = cfg.scenario(seed=seed)
                learned.append(run_episode(RoutingCore(self.net, sc),
                                           TrainedPolicy(self.model)).metrics)
                shortest.append(run_episode(RoutingCore(self.net, sc),
                                            ShortestPathPolicy()).metrics)
            tt = float(np.mean([m["mean_travel_time"] for m in learned]))
            sp = float(np.mean([m["mean_travel_time"] for m in shortest]))
            summary |= {"heldout_seeds": cfg.heldout(), "heldout_mean_travel_time": tt,
                        "heldout_arrival_rate": float(np.mean([m["arrival_rate"]
                                                               for m in learned])),
                        "heldout_shortest_path_travel_time": sp,
                        "heldout_vs_shortest_path": tt / sp - 1.0}
        self.folder.write_summary(summary)
        return summary


def model_usage(paths: list[Path]) -> dict[str, float]:
    """Model calls, prompt and completion tokens and wall time of the expert team that wrote
    the demo batches ``paths`` (from their metadata; zero for cached answers)."""
    total = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "wall_s": 0.0}
    for path in paths:
        usage = json.loads(Path(path).read_text()).get("extra", {}).get("usage", {})
        for key in total:
            total[key] += float(usage.get(key, 0.0))
    return total


def driven_routes(rec: EpisodeRecord, core: RoutingCore) -> list[np.ndarray]:
    """Node route each agent drove in one episode (its decision nodes, then its destination
    if it arrived)."""
    bounds = np.searchsorted(rec.agent, np.arange(core.n + 1))  # rows sorted by agent
    routes = []
    for i in range(core.n):
        nodes = rec.node[bounds[i]:bounds[i + 1]]
        routes.append(np.append(nodes, core.dest[i]) if rec.arrived[i] else nodes)
    return routes

