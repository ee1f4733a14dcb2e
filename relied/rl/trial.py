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

:func:`learners_of` wraps a model, its optimiser and ``lambda`` into the critic's request
object (:class:`~relied.experts.learners.Learners`), which training and ``relied experts
generate`` hand to the expert team and the re-check: :func:`fresh_learners` are the learners
a new run starts from (seeded), :func:`run_learners` those of a run's last checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from relied.env.core import RoutingCore
from relied.env.rollout import DecisionRecord, Trajectories
from relied.env.sample import FleetSample
from relied.env.scenario import Scenario
from relied.experts.bound import PolicyProbs
from relied.experts.learners import Learners
from relied.rl.checkpoints import checkpoint_files
from relied.rl.config import TrainConfig
from relied.rl.demos import decisions_of, demonstrated
from relied.rl.envs import make_vector_env
from relied.rl.hybrid_ppo import ExpertTerm, Tensors, evaluate_actions, hybrid_update
from relied.rl.model import ActorCritic, model_device
from relied.rl.policy import PolicyFileError, safe_torch_load
from relied.rl.rollout import Decisions, collect, gae
from relied.rl.schedule import expert_weights

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
                 seed: int = TRIAL_SEED) -> LearnerUpdate:
    """A :class:`~relied.experts.bound.TrialUpdate` over the learners ``model`` (with their
    optimiser ``optim``); ``lam()`` gives the current ``lambda`` per agent ``(n,)``, read at
    each call. ``model`` and ``optim`` are never changed. The object also forecasts the whole
    next update (:meth:`LearnerUpdate.lookahead`, bound version 6)."""
    return LearnerUpdate(model, optim, cfg, lam, steps, seed)


def _copy(model: ActorCritic, optim: torch.optim.Optimizer
          ) -> tuple[ActorCritic, torch.optim.Optimizer]:
    """A training copy of ``model`` with a copy of its optimiser's state."""
    successor = copy.deepcopy(model)
    successor.train()
    opt = type(optim)(successor.parameters(), **optim.defaults)
    opt.load_state_dict(copy.deepcopy(optim.state_dict()))
    return successor, opt


def lookahead_seed(seed: int) -> int:
    """The lookahead's generator seed for the critic's ``BoundConfig.seed``: a stream of its
    own (never the trainer's ``manual_seed(cfg.seed)``), so the lookahead forecasts the next
    update and does not replay it."""
    return int(np.random.SeedSequence([seed, 6]).generate_state(1)[0])


class LearnerUpdate:
    """The learners' update on a plan's demonstrations, on copies (the learners are never
    changed). Called (:class:`~relied.experts.bound.TrialUpdate`, bound version 5) it is the
    *trial*: the update's expert half alone, :class:`~relied.rl.hybrid_ppo.ExpertTerm` for
    ``steps`` minibatch steps (default ``cfg.epochs``) seeded by ``seed``.
    :meth:`lookahead` (bound version 6) is the *whole* next update."""

    def __init__(self, model: ActorCritic, optim: torch.optim.Optimizer, cfg: TrainConfig,
                 lam: Callable[[], np.ndarray], steps: int | None = None,
                 seed: int = TRIAL_SEED):
        self.model, self.optim, self.cfg, self.lam = model, optim, cfg, lam
        self.steps, self.seed = steps, seed
        self._rollouts: dict[str, tuple] = {}
        self._ahead: dict[str, PolicyProbs] = {}

    def __call__(self, demos: DecisionRecord | Trajectories,
                 agents: Sequence[int] | None = None) -> PolicyProbs:
        model, optim, cfg, lam, k = self.model, self.optim, self.cfg, self.lam, self.model.k
        device = model_device(model)
        rows = demos if isinstance(demos, DecisionRecord) else DecisionRecord.of(demos)
        dec = demonstrated(decisions_of(rows, k), None if agents is None else list(agents))
        successor, opt = _copy(model, optim)
        if len(dec) == 0:
            return probs_of(successor)
        ret = torch.as_tensor(gae(dec, np.zeros(len(dec)), cfg.gamma, 1.0),
                              dtype=torch.float32, device=device)
        weights = torch.as_tensor(np.asarray(lam(), dtype=np.float64), dtype=torch.float32,
                                  device=device)
        term = ExpertTerm.prepare(successor, cfg, Tensors.of(dec).to(device), ret, weights)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(cfg.epochs if self.steps is None else self.steps):
            idx = torch.randint(len(dec), (cfg.expert_batch,), generator=gen).to(device)
            loss, _ = term.loss(successor, cfg, idx)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(successor.parameters(), cfg.max_grad_norm)
            opt.step()
        successor.eval()
        return probs_of(successor)

    def rollout_scenario(self, scenario: Scenario, sample: FleetSample | None = None
                         ) -> Scenario:
        """Where the lookahead's rollout runs: ``scenario``'s learner trips (origins,
        destinations, departures; its seed) in the learners' own training environment
        (``cfg``'s background share, horizon, time step and traffic model), the environment
        their next update samples; the same scenario when training runs on it (a preset).
        On a fleet ``sample`` (``scenario`` is its own) also the sample's stuck time, scaled
        with its network (:mod:`relied.env.sample`)."""
        keys = ("origins", "destinations", "departures_s") + (
            () if sample is None else ("stuck_time_s",))
        trips = {k: getattr(scenario, k) for k in keys}
        return self.cfg.scenario(seed=scenario.seed, city=scenario.city,
                                 n_agents=scenario.n_agents).model_copy(update=trips)

    def _rollout(self, scenario: Scenario, seed: int, sample: FleetSample | None = None
                 ) -> tuple:
        """The shared rollout of the learners' current policy (``cfg.n_envs`` episodes,
        actions drawn from the lookahead's own generator), its log-probabilities, values and
        advantages, as the trainer computes them before an update; with the generator after
        the draws (the update's minibatches continue it). One per (scenario, seed, sample).
        ``sample``: run on its scaled network, learner ``k`` acting as (and its rows kept
        under) fleet learner ``sample.learners[k]``."""
        key = hashlib.sha256(repr((scenario.model_dump(mode="json"), seed, _identity(sample))
                                  ).encode()).hexdigest()
        if key in self._rollouts:
            return self._rollouts[key]
        model, cfg = self.model, self.cfg
        device = model_device(model)
        gen = torch.Generator().manual_seed(lookahead_seed(seed))
        fleet = None if sample is None else sample.learners

        def act(obs: np.ndarray, mask: np.ndarray, agent: np.ndarray) -> np.ndarray:
            agent = agent if fleet is None else fleet[agent]
            with torch.no_grad():
                logits = model.logits(torch.as_tensor(obs, dtype=torch.float32, device=device),
                                      torch.as_tensor(mask, dtype=torch.bool, device=device),
                                      torch.as_tensor(agent, dtype=torch.long, device=device))
                probs = torch.softmax(logits, 1).cpu()
            return torch.multinomial(probs, 1, generator=gen)[:, 0].numpy()

        venv = make_vector_env(scenario, cfg.n_envs, "dummy", with_state=cfg.spec.central_value,
                               decisions_only=True, net=None if sample is None else sample.net)
        try:
            records = collect(venv, act, model.obs_dim, model.k)
        finally:
            venv.close()
        dec = Decisions.concat([r.dec for r in records])
        if fleet is not None:  # (sorted ids: the rows stay sorted by agent, then time)
            dec = dataclasses.replace(dec, agent=fleet[dec.agent])
        batch = Tensors.of(dec).to(device)
        with torch.no_grad():
            old_logp, value = evaluate_actions(model, batch)
        adv = torch.as_tensor(gae(dec, value.cpu().numpy(), cfg.gamma, cfg.gae_lambda),
                              dtype=torch.float32, device=device)
        self._rollouts[key] = (batch, old_logp, adv, adv + value, gen.get_state())
        return self._rollouts[key]

    def lookahead(self, scenario: Scenario, demos: DecisionRecord | Trajectories,
                  agents: Sequence[int] | None = None, seed: int = 0,
                  sample: FleetSample | None = None) -> PolicyProbs:
        """The learners' policy after the whole next hybrid update with ``demos`` as the
        expert buffer: both halves (PPO on a rollout of their current policy in
        :meth:`rollout_scenario`, the expert loss with ``lambda``), every epoch and minibatch
        step of ``cfg``, the trainer's optimiser state, on a copy. The rollout and the
        minibatch draws come from the critic's ``seed`` (:func:`lookahead_seed`), shared by
        every plan judged under these learners, so plans differ only by their
        demonstrations. Deterministic; the same demonstrations give the same (cached)
        successor. ``sample``: ``scenario`` is this fleet sample's
        (:class:`~relied.env.sample.FleetSample`; ``demos`` and ``agents`` carry fleet ids):
        the rollout runs :meth:`rollout_scenario` of it on the sample's scaled network, its
        learner ``k`` acting as fleet learner ``sample.learners[k]``
        (:meth:`relied.experts.learners.Learners.on_sample`)."""
        model, cfg = self.model, self.cfg
        rows = demos if isinstance(demos, DecisionRecord) else DecisionRecord.of(demos)
        picked = None if agents is None else sorted(int(a) for a in agents)
        h = hashlib.sha256(repr((scenario.model_dump(mode="json"), seed, picked)
                                + (() if sample is None else (_identity(sample),))).encode())
        for part in (rows.obs, rows.mask, rows.action, rows.agent, rows.step, rows.cum,
                     rows.returns):
            h.update(np.ascontiguousarray(part).tobytes())
        key = h.hexdigest()
        if key in self._ahead:
            return self._ahead[key]
        device = model_device(model)
        batch, old_logp, adv, ret, state = self._rollout(
            self.rollout_scenario(scenario, sample), seed, sample)
        dec = demonstrated(decisions_of(rows, model.k), picked)
        expert_ret = torch.as_tensor(gae(dec, np.zeros(len(dec)), cfg.gamma, 1.0),
                                     dtype=torch.float32, device=device)
        lam = torch.as_tensor(np.asarray(self.lam(), dtype=np.float64), dtype=torch.float32,
                              device=device)
        successor, opt = _copy(model, self.optim)
        gen = torch.Generator()
        gen.set_state(state)
        hybrid_update(successor, opt, cfg, gen, batch, old_logp, adv, ret,
                      Tensors.of(dec).to(device) if len(dec) else None,
                      expert_ret if len(dec) else None, lam if cfg.uses_experts else None)
        successor.eval()
        self._ahead[key] = probs_of(successor)
        return self._ahead[key]


def _identity(sample: FleetSample | None) -> tuple | None:
    """What tells one fleet sample's rollout from another's (its network and learners)."""
    return None if sample is None else (sample.net.name, sample.info.learners)


def learners_of(model: ActorCritic, optim: torch.optim.Optimizer, cfg: TrainConfig,
                lam: Callable[[], np.ndarray], source: str,
                previous: PolicyProbs | None = None, steps: int | None = None,
                cacheable: bool = False) -> Learners:
    """The critic's view of the learners ``model``: its current ``policy_probs``, the
    ``previous`` policy (if any) and its :func:`trial_update`. ``cacheable``: give the
    learners a digest of their state (weights, optimiser, ``lambda`` now, the trial's
    settings), so a verdict under them may be cached; only for learners that do not change
    while they are in use (a judgement's ``lambda`` is read when it is made)."""
    digest = None
    if cacheable:
        h = hashlib.sha256()
        for state in (model.state_dict(), optim.state_dict()["state"]):
            for key, value in sorted(_flat(state), key=lambda kv: kv[0]):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes()
                         if torch.is_tensor(value) else repr(value).encode())
        h.update(np.asarray(lam(), dtype=np.float64).tobytes())
        h.update(repr((TRIAL_SEED, steps, cfg.model_dump(
            include={"gamma", "epochs", "expert_batch", "expert_loss", "value_filter", "lr",
                     "max_grad_norm", "clip"}))).encode())
        digest = h.hexdigest()
    return Learners(policy_probs=probs_of(model), previous_probs=previous,
                    trial_update=trial_update(model, optim, cfg, lam, steps), source=source,
                    digest=digest)


def _flat(state, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, leaf)`` pairs of a nested state dict."""
    if isinstance(state, dict):
        return [kv for k, v in state.items() for kv in _flat(v, f"{prefix}{k}.")]
    return [(prefix, state)]


def new_model(cfg: TrainConfig, core: RoutingCore) -> ActorCritic:
    """The learners' network for ``cfg`` over ``core`` (its sizes), freshly initialised from
    the current torch generator (the trainer seeds it with ``cfg.seed`` first)."""
    return ActorCritic(core.obs_dim, core.k, core.n, share=cfg.share, n_groups=cfg.n_groups,
                       hidden=cfg.hidden, id_embed=cfg.id_embed,
                       state_dim=core.net.n_edges if cfg.spec.central_value else 0)


def new_optimizer(cfg: TrainConfig, model: ActorCritic) -> torch.optim.Optimizer:
    """The learners' optimiser (the trainer's)."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)


def _first_lambda(cfg: TrainConfig, n: int) -> Callable[[], np.ndarray]:
    """``lambda`` before any demonstration was loaded: 1 (BC) or ``lambda0``, clipped."""
    first = 1.0 if cfg.spec.weight == "one" else cfg.lambda0
    value = np.clip(np.full(n, first), cfg.lambda_min, cfg.lambda_max)
    return lambda: value


def fresh_learners(cfg: TrainConfig, core: RoutingCore) -> Learners:
    """The untrained learners a new ``relied train`` run of ``cfg`` starts from over
    ``core``'s sizes: the network initialised with ``cfg.seed`` (the same weights as the
    trainer's), a fresh optimiser, ``lambda`` before demonstrations; cacheable (they never
    change). The global torch generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = new_model(cfg, core)
    return learners_of(model, new_optimizer(cfg, model), cfg, _first_lambda(cfg, core.n),
                       f"untrained {cfg.algo} learners initialised with seed {cfg.seed} "
                       f"(share={cfg.share}, hidden={cfg.hidden})", cacheable=True)


def run_learners(run_dir: Path, core: RoutingCore) -> Learners:
    """The learners of a run's last checkpoint (``checkpoints/ckpt_<iteration>.pt``: model,
    optimiser, iteration, the per-agent DTW of its first fixed scenario) over ``core``,
    which must have the run's number of learners; ``lambda`` is the run's schedule at that
    iteration (its first fixed scenario's, no expert returns: ``weight=return`` gives
    ``lambda0``). :class:`PolicyFileError` (one line) when the folder, its config or its
    checkpoint cannot be read or does not fit."""
    run_dir = Path(run_dir)
    try:
        cfg = TrainConfig.load(run_dir / "config.json")
    except (OSError, ValueError) as exc:
        raise PolicyFileError(f"--run {run_dir}: no readable config.json "
                              f"({type(exc).__name__}); give a run folder of relied train"
                              ) from None
    if cfg.n_agents != core.n:
        raise PolicyFileError(f"--run {run_dir} trained {cfg.n_agents} learners, the scenario "
                              f"has {core.n}; use --agents {cfg.n_agents}")
    found = checkpoint_files(run_dir)
    if not found:
        raise PolicyFileError(f"--run {run_dir} has no checkpoint; train or resume it first")
    try:
        state = safe_torch_load(found[-1])
        model = new_model(cfg, core)
        model.load_state_dict(state["model"])
        optim = new_optimizer(cfg, model)
        optim.load_state_dict(state["optim"])
        iteration = int(state["counters"]["iteration"])
        dtw, ret = state["dtw_km"].numpy()[0], state["agent_return"].numpy()[0]
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: one clear error
        raise PolicyFileError(f"checkpoint '{found[-1]}' is corrupt or does not fit this "
                              f"city's network ({type(exc).__name__}); use a run of this city"
                              ) from None
    n = core.n
    if cfg.spec.weight == "one":
        value = np.ones(n)
    else:
        value = expert_weights(cfg.weight, iteration, lambda0=cfg.lambda0,
                               lambda_min=cfg.lambda_min, lambda_max=cfg.lambda_max,
                               decay=cfg.lambda_decay, dtw_km=dtw,
                               dtw_scale_km=cfg.dtw_scale_km, agent_return=ret,
                               expert_return=np.full(n, np.nan),
                               return_temp=cfg.return_temp, n=n)
    return learners_of(model, optim, cfg, lambda: value,
                       f"{cfg.algo} learners of run {run_dir} at iteration {iteration}",
                       cacheable=True)
