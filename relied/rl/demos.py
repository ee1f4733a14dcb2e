"""Demonstrations for training: providers that fill a demo store, and the expert buffer.

A :data:`DemoProvider` writes demonstrations of a scenario into a store directory and returns
the batch paths. Built in: ``shortest-path`` (the free-flow shortest-path reference policy,
recorded here) and any other name, which is handed to the expert team
(``relied.agents.generate.generate_demonstrations``) as its model spec.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from relied.env.core import RoutingCore
from relied.env.policies import ShortestPathPolicy
from relied.env.rollout import DecisionRecord, run_episode
from relied.env.scenario import Scenario, index_of
from relied.experts.bound import BoundConfig
from relied.experts.demos import DemoFileError, DemoMeta, list_batches, load_batch, save_batch
from relied.experts.learners import Learners
from relied.rl.config import TrainConfig
from relied.rl.rollout import Decisions, gae

if TYPE_CHECKING:
    from relied.agents.team import TeamConfig

DemoProvider = Callable[..., list[Path]]
"""``provider(scenario, out_dir, learners=None, behaviour=None) -> batch paths``: ``learners``
(:class:`~relied.experts.learners.Learners`) are what the critic judges the plans under (the
learners' current policy and trial update: training always passes them), ``behaviour`` the
learners' recent routes (OSM ids) when demonstrations are re-generated during training."""


class DemoError(RuntimeError):
    """Demonstrations that cannot be produced or do not fit the training scenario."""


def shortest_path_demos(scenario: Scenario, out_dir: Path, **_: object) -> list[Path]:
    """Record one episode of the free-flow shortest-path policy as a demo batch (the learners'
    policies and routes, if given, do not change it)."""
    from relied.env.cities import load_city

    net = load_city(scenario.city)
    core = RoutingCore(net, scenario, record_routes=True)
    episode = run_episode(core, ShortestPathPolicy(), decisions=True)
    routes = [net.osm_ids[r].tolist() for r in episode.routes]
    meta = DemoMeta(batch_id=f"shortest-path-{scenario.seed}", scenario=core.scenario,
                    routes=routes, model_spec="shortest-path", source="shortest-path",
                    metrics=episode.metrics)
    return [save_batch(Path(out_dir), episode.decisions, meta)]


def team_config(cfg: TrainConfig) -> TeamConfig:
    """The expert team's settings of a run: its critic's bound, threshold and discount, how many
    learners it demonstrates and vehicles it simulates (``demo_agents``, ``sim_vehicles``)."""
    from relied.agents.team import TeamConfig

    return TeamConfig(bound=BoundConfig(epsilon=cfg.epsilon, gamma=cfg.gamma,
                                        version=cfg.bound_version),
                      demo_agents=cfg.demo_agents, sim_vehicles=cfg.sim_vehicles)


def expert_team_demos(model: str, batches: int, filter_by_bound: bool, progress: bool,
                      ollama_host: str | None = None, timeout_s: float = 120.0,
                      config: TeamConfig | None = None) -> DemoProvider:
    """A provider that asks the expert team for ``batches`` demo batches with the team
    settings ``config`` (default :class:`~relied.agents.team.TeamConfig`; a run's:
    :func:`team_config`)."""

    def provide(scenario: Scenario, out_dir: Path, learners: Learners | None = None,
                behaviour: dict[int, list[int]] | None = None) -> list[Path]:
        try:
            from relied.agents.generate import generate_demonstrations
        except ImportError as exc:
            raise DemoError(f"the expert team is not available ({exc}); use --experts "
                            "shortest-path or --demos DIR") from None
        return generate_demonstrations(scenario, Path(out_dir), model=model, batches=batches,
                                       filter_by_bound=filter_by_bound, learners=learners,
                                       behaviour=behaviour, progress=progress, config=config,
                                       ollama_host=ollama_host, timeout_s=timeout_s)

    return provide


def make_provider(cfg: TrainConfig, progress: bool) -> DemoProvider:
    """The demo provider of a run's config (its expert model, host, timeout and team
    settings)."""
    if cfg.experts == "shortest-path":
        return shortest_path_demos
    return expert_team_demos(cfg.experts, cfg.demo_batches, cfg.spec.demos == "accepted", progress,
                             cfg.ollama_host, cfg.timeout_s, team_config(cfg))


@dataclass
class ExpertSet:
    """The expert buffer: decision transitions of the demonstrated agents of all demo batches
    (kept apart from the agents' own rollouts; a batch with ``demo_agents`` contributes only
    those agents' rows), each decision's discounted return ``ret``, and per agent its expert
    route (node xy in km) and episode return (every agent: the ones outside a batch's sample
    drove shortest paths, and have no rows to weight)."""

    dec: Decisions
    ret: np.ndarray
    routes_km: list[np.ndarray]
    agent_return: np.ndarray
    fallback: int = 0  # batches used although the critic rejected them (none was accepted)


def load_expert_set(paths: list[Path], core: RoutingCore, gamma: float,
                    accepted_only: bool) -> ExpertSet:
    """Load demo batches of ``core``'s scenario; ``accepted_only`` drops batches the expert
    team rejected (RELED keeps only demos within the non-stationarity bound) unless none was
    accepted: then the best-bound fallback batches are used (:func:`select_batches`)."""
    parts, returns, routes = [], [], None
    loaded = [(path, *load_batch(path)) for path in paths]
    chosen, fallback = select_batches(loaded, accepted_only)
    for path, rows, meta in chosen:
        _check_scenario(meta, core, path)
        if rows.obs.shape[1] != core.obs_dim or rows.mask.shape[1] != core.k + 1:
            raise DemoError(f"demo batch '{path}' has {rows.obs.shape[1]} observation features "
                            f"and {rows.mask.shape[1]} actions; this environment has "
                            f"{core.obs_dim} and {core.k + 1} (recorded by another relied "
                            "version?): regenerate it")
        parts.append(demonstrated(decisions_of(rows, core.k), meta.demo_agents))
        returns.append(rows.returns)
        if routes is None:
            routes = [core.xy[index_of(core.net, r)] / 1000.0 for r in meta.routes]
    if not parts:
        raise DemoError("no usable demonstration batch (all rejected or none given)")
    dec = Decisions.concat(parts)
    ret = np.concatenate([gae(p, np.zeros(len(p)), gamma, 1.0) for p in parts])
    return ExpertSet(dec, ret, routes, np.mean(returns, axis=0), fallback)


def decisions_of(rows: DecisionRecord, k: int) -> Decisions:
    """Decision transitions of a recording's rows, sorted by (agent, time): a row's reward is
    its agent's reward summed until its next decision (after its last: until the episode's
    end); the same transitions as ``decisions_from`` over the dense per-step arrays (rows
    with a valid move among the ``k`` slots)."""
    keep = rows.mask[:, :k].any(axis=1)
    order = np.flatnonzero(keep)[np.argsort(rows.agent[keep], kind="stable")]
    agent, t, cum = rows.agent[order].astype(np.int64), rows.step[order], rows.cum[order]
    same_next = np.zeros(len(agent), dtype=bool)
    same_next[:-1] = agent[1:] == agent[:-1]
    cum_next = np.where(same_next, np.roll(cum, -1), rows.returns[agent])
    return Decisions(obs=rows.obs[order].astype(np.float32), mask=rows.mask[order],
                     action=rows.action[order].astype(np.int64),
                     reward=(cum_next - cum).astype(np.float32), agent=agent,
                     t=t.astype(np.int64), end=~same_next,
                     gstate=np.zeros((len(t), 0), dtype=np.float32),
                     scenario=np.zeros(len(t), dtype=np.int64))


def demonstrated(dec: Decisions, agents: list[int] | None) -> Decisions:
    """The rows of ``dec`` that belong to ``agents`` (None: all rows)."""
    if agents is None:
        return dec
    keep = np.isin(dec.agent, np.asarray(agents, dtype=np.int64))
    return Decisions(*(getattr(dec, f)[keep] for f in Decisions.__dataclass_fields__))


def _bound_quantile(meta: DemoMeta) -> float:
    """The bound quantile the critic gave a batch (its verdict's bounds; inf if unknown)."""
    bounds = list(((meta.verdict or {}).get("bounds") or {}).values())
    q = float((meta.extra.get("bound") or {}).get("quantile", 0.9))
    return float(np.quantile(np.asarray(bounds, dtype=float), q)) if bounds else float("inf")


def select_batches(loaded: list[tuple[Path, DecisionRecord, DemoMeta]], accepted_only: bool
                   ) -> tuple[list[tuple[Path, DecisionRecord, DemoMeta]], int]:
    """``(batches to train on, fallback count)``: all, or with ``accepted_only`` the accepted
    ones; when none was accepted, the rejected batch with the lowest bound quantile (those the
    team marked ``fallback`` first), with one warning line: training goes on."""
    if not accepted_only:
        return loaded, 0
    accepted = [b for b in loaded if b[2].accepted]
    if accepted or not loaded:
        return accepted, 0
    best = min(loaded, key=lambda b: (not b[2].extra.get("fallback", False),
                                      _bound_quantile(b[2]), str(b[0])))
    print(f"warning: no demonstration batch passed the critic; training on the best-bound "
          f"batch '{best[0]}' (fallback)", file=sys.stderr)
    return [best], 1


def _check_scenario(meta: DemoMeta, core: RoutingCore, path: Path) -> None:
    sc = meta.scenario.resolve(core.net) if meta.scenario.city == core.scenario.city else None
    if sc is None or sc.origins != core.scenario.origins or \
            sc.destinations != core.scenario.destinations:
        raise DemoError(f"demo batch '{path}' was recorded for another scenario "
                        f"({meta.scenario.city}, seed {meta.scenario.seed}); "
                        "demos must match the training city, agents and seed")


def demo_paths(store: Path) -> list[Path]:
    paths = list_batches(store)
    if not paths:
        raise DemoFileError(f"no demonstration batch in '{store}'")
    return paths
