"""The learners as the stationarity critic sees them: one request object, passed in.

Every critic judgement (the expert team's check of a plan, the re-check of a stored batch
during training) depends on the learners: their current policy, the policy before their last
update and, since bound version 5, their trial update on the plan
(:class:`relied.experts.bound.TrialUpdate`). Training and ``relied experts generate`` build a
:class:`Learners` (``relied.rl.trial``) and hand it down; this package never imports
``relied.rl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from relied.experts.bound import BOUND_VERSION, PolicyProbs, TrialUpdate

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

    @property
    def bound_version(self) -> int:
        """The bound version of the terms these learners give: :data:`~relied.experts.
        bound.BOUND_VERSION` with a trial update, else :data:`NO_TRIAL_VERSION`."""
        return BOUND_VERSION if self.trial_update is not None else NO_TRIAL_VERSION

    @property
    def cacheable(self) -> bool:
        """Whether a verdict under these learners may come from (and go to) a cache: the
        uniform untrained learners, or learners with a :attr:`digest`."""
        return self.digest is not None or (self.policy_probs is None
                                           and self.previous_probs is None)


#: the learners of a judgement nobody described: untrained, no trial (bound version 4)
UNTRAINED = Learners()
