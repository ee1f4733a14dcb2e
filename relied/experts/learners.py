"""The learners as the stationarity critic sees them: one request object, passed in.

Every critic judgement (the expert team's check of a plan, the re-check of a stored batch
during training) depends on the learners: their current policy, the policy before their last
update and, since bound version 5, their trial update on the plan
(:class:`relied.experts.bound.TrialUpdate`). Training and ``relied experts generate`` build a
:class:`Learners` (``relied.rl.trial``) and hand it down; this package never imports
``relied.rl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from relied.env.rollout import DecisionRecord, Trajectories
from relied.env.sample import FleetSample
from relied.experts.bound import (
    LOOKAHEAD_VERSION,
    TRIAL_VERSION,
    BoundConfig,
    Lookahead,
    PolicyProbs,
    TrialUpdate,
)

#: the bound version of a judgement without a trial update (current policy against the
#: plan's action, plus the last learning step)
NO_TRIAL_VERSION = 4


@dataclass(frozen=True)
class Learners:
    """``policy_probs``: the learners' current action probabilities (None: uniform over the
    valid actions, untrained); ``previous_probs``: their policy before the last update (the
    step term without a trial); ``trial_update``: their trial update on a plan (bound version
    5; needs ``policy_probs``); ``source``: what these learners are, in words (stored with
    each demonstration batch); ``digest``: a stable id of their state (weights, optimiser,
    ``lambda``, settings) under which a verdict may be cached; None: never cached."""

    policy_probs: PolicyProbs | None = None
    previous_probs: PolicyProbs | None = None
    trial_update: TrialUpdate | None = None
    source: str = "untrained (uniform over valid actions)"
    digest: str | None = None

    def __post_init__(self) -> None:
        if self.trial_update is not None and self.policy_probs is None:
            raise ValueError("a trial update needs the learners' current policy_probs")

    def bound_version(self, bound: BoundConfig | None = None) -> int:
        """The bound version the critic judges under these learners with settings ``bound``:
        :data:`NO_TRIAL_VERSION` without a trial update; with one
        :data:`~relied.experts.bound.TRIAL_VERSION`, or the lookahead's
        (:data:`~relied.experts.bound.LOOKAHEAD_VERSION`) where ``bound`` asks for it."""
        if self.trial_update is None:
            return NO_TRIAL_VERSION
        return (LOOKAHEAD_VERSION if bound is not None and bound.version >= LOOKAHEAD_VERSION
                else TRIAL_VERSION)

    @property
    def cacheable(self) -> bool:
        """Whether a verdict under these learners may come from (and go to) a cache: the
        uniform untrained learners, or learners with a :attr:`digest`."""
        return self.digest is not None or (self.policy_probs is None
                                           and self.previous_probs is None)

    def on_sample(self, sample: FleetSample, n_agents: int) -> Learners:
        """These learners as seen from a run on ``sample`` of their fleet of ``n_agents``
        (:class:`relied.env.sample.FleetSample`), whose learner ``k`` is fleet learner
        ``sample.learners[k]``: their policies are asked, and their trial update trained,
        under the fleet's agent ids (a policy may differ per agent); the lookahead of their
        next update (bound version 6) rolls them out on the sample's scaled network
        (:class:`SampledUpdate`). Same ``source`` and ``digest``."""
        fleet = sample.learners
        inner = self.trial_update
        trial = None if inner is None else (
            SampledLookahead if isinstance(inner, Lookahead) else SampledUpdate)(
                inner, sample, n_agents)
        return replace(self, policy_probs=_on_fleet(self.policy_probs, fleet),
                       previous_probs=_on_fleet(self.previous_probs, fleet), trial_update=trial)


def _on_fleet(fn: PolicyProbs | None, fleet: np.ndarray) -> PolicyProbs | None:
    """``fn`` asked under the fleet's ids ``fleet[agent]`` of a sample's agents."""
    if fn is None:
        return None
    return lambda obs, mask, agent: fn(obs, mask, fleet[np.asarray(agent)])


@dataclass(frozen=True)
class SampledUpdate:
    """A :class:`~relied.experts.bound.TrialUpdate` of the fleet's learners (``inner``) seen
    from a run on ``sample``: the demonstrations' rows and ``agents`` are mapped to the fleet's
    ids (every learner's return: 0 for those not simulated) and the successor is asked under
    them."""

    inner: TrialUpdate
    sample: FleetSample
    n_agents: int

    def fleet_rows(self, demos: DecisionRecord | Trajectories) -> DecisionRecord:
        """``demos`` (a run on the sample) under the fleet's agent ids."""
        fleet = self.sample.learners
        rows = demos if isinstance(demos, DecisionRecord) else DecisionRecord.of(demos)
        returns = np.zeros(self.n_agents)
        returns[fleet] = rows.returns
        return DecisionRecord(rows.step, fleet[rows.agent], rows.obs, rows.mask, rows.action,
                              rows.cum, returns, rows.steps)

    def fleet_agents(self, agents: Sequence[int] | None) -> list[int] | None:
        return None if agents is None else \
            self.sample.learners[np.asarray(agents, dtype=np.int64)].tolist()

    def __call__(self, demos: DecisionRecord | Trajectories,
                 agents: Sequence[int] | None = None) -> PolicyProbs:
        successor = self.inner(self.fleet_rows(demos), self.fleet_agents(agents))
        return _on_fleet(successor, self.sample.learners)


@dataclass(frozen=True)
class SampledLookahead(SampledUpdate):
    """:class:`SampledUpdate` of learners whose update also looks ahead
    (:class:`~relied.experts.bound.Lookahead`, bound version 6): the lookahead of a run on
    the sample (``scenario``: the sample's) rolls the learners out on the sample's scaled
    network under their fleet ids (``inner.lookahead(..., sample=...)``)."""

    def lookahead(self, scenario: Any, demos: DecisionRecord | Trajectories,
                  agents: Sequence[int] | None = None, seed: int = 0) -> PolicyProbs:
        successor = self.inner.lookahead(scenario, self.fleet_rows(demos),
                                         self.fleet_agents(agents), seed, sample=self.sample)
        return _on_fleet(successor, self.sample.learners)


#: the learners of a judgement nobody described: untrained, no trial (bound version 4)
UNTRAINED = Learners()
