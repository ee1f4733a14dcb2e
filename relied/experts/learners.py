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

import numpy as np

from relied.env.rollout import DecisionRecord, Trajectories
from relied.experts.bound import (
    LOOKAHEAD_VERSION,
    TRIAL_VERSION,
    BoundConfig,
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

    def on_sample(self, ids: Sequence[int], n_agents: int) -> Learners:
        """These learners as seen from a run on a sample of their fleet of ``n_agents``
        (:class:`relied.env.sample.FleetSample`), whose learner ``k`` is fleet learner
        ``ids[k]``: their policies are asked, and their trial update trained, under the
        fleet's agent ids (a policy may differ per agent). Same ``source`` and ``digest``."""
        fleet = np.asarray(ids, dtype=np.int64)

        def probs_of(fn: PolicyProbs | None) -> PolicyProbs | None:
            if fn is None:
                return None
            return lambda obs, mask, agent: fn(obs, mask, fleet[np.asarray(agent)])

        inner, trial = self.trial_update, None
        if inner is not None:
            def on_fleet(demos: DecisionRecord | Trajectories,
                         agents: Sequence[int] | None = None) -> PolicyProbs:
                rows = demos if isinstance(demos, DecisionRecord) else DecisionRecord.of(demos)
                returns = np.zeros(n_agents)
                returns[fleet] = rows.returns
                mapped = DecisionRecord(rows.step, fleet[rows.agent], rows.obs, rows.mask,
                                        rows.action, rows.cum, returns, rows.steps)
                successor = inner(mapped, None if agents is None
                                  else fleet[np.asarray(agents, dtype=np.int64)].tolist())
                return probs_of(successor)

            trial = on_fleet
        return replace(self, policy_probs=probs_of(self.policy_probs),
                       previous_probs=probs_of(self.previous_probs), trial_update=trial)


#: the learners of a judgement nobody described: untrained, no trial (bound version 4)
UNTRAINED = Learners()
