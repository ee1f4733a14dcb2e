"""A fallible expert for stress tests: the offline planner with injected herding errors.

Not an LLM. :class:`FallibleOfflineClient` answers every group plan as the offline planner
(:class:`relied.agents.offline.OfflinePlannerClient`) does, then, with probability ``p``
(seeded, deterministic), replaces that group's plan with a plausible LLM failure, *herding*:
every agent of the group is sent on its own individually fastest route as if it drove alone,
ignoring that the other agents of the group are told the same, so agents whose trips share a
corridor all pile onto the same currently-fastest streets. Two kinds of herd: ``forecast``
(fastest route on the traffic forecast's time-dependent edge times, what "take the road that
is fastest right now" gives) and ``freeflow`` (the free-flow shortest route, what "take the
shortest road" gives). ``mixed`` (the default) draws the kind with each error, 50/50;
without a forecast every herd is ``freeflow``. A herding plan is a valid plan (it passes the
same Pydantic validation as any other); its agents' rationales start with
:data:`HERDING_MARK`.

The draw is keyed by (client seed, the task's run id: scenario and plan variant, the
group's agents, the round): a re-prompted planner (a round after a critic rejection) draws
again, so a retry can give the planner's good plan, as a re-prompted LLM might. Every
injection is recorded in :attr:`FallibleOfflineClient.injections`.

Model spec: ``offline-fallible:<p>[:<kind>]`` with ``0 <= p <= 1`` and kind ``mixed``
(default), ``freeflow`` or ``forecast`` (:func:`parse_fallible`).
"""

from __future__ import annotations

import zlib

import numpy as np

from relied.agents.offline import OFFLINE_LABEL, OfflinePlannerClient
from relied.agents.plans import AgentPlan, CriticVerdict, JointPlan
from relied.agents.view import CityView
from relied.env.forecast import TrafficForecast
from relied.env.network import CityNetwork

FALLIBLE_PREFIX = "offline-fallible:"
FALLIBLE_VERSION = "1"  # bump when the injected errors change (part of the cache key)
HERDING_MARK = "herding (injected error)"
HERD_STREAM = 0x4E7D  # the injections' random stream, apart from every other draw


KINDS = ("mixed", "freeflow", "forecast")


def parse_fallible(spec: str) -> tuple[float, str] | None:
    """``(p, kind)`` of an ``offline-fallible:<p>[:<kind>]`` spec; None for any other spec;
    ValueError when ``p`` is not a number in [0, 1] or the kind is unknown."""
    if not spec.startswith(FALLIBLE_PREFIX):
        return None
    text, _, kind = spec[len(FALLIBLE_PREFIX):].strip().partition(":")
    try:
        p = float(text)
    except ValueError:
        raise ValueError(f"'{spec}': the error rate '{text}' is not a number; use e.g. "
                         "offline-fallible:0.3 or offline-fallible:0.8:freeflow") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"'{spec}': the error rate must lie in [0, 1]")
    kind = kind.strip() or "mixed"
    if kind not in KINDS:
        raise ValueError(f"'{spec}': unknown herding kind '{kind}'; use {', '.join(KINDS)}")
    return p, kind


def fallible_label(p: float, kind: str = "mixed") -> str:
    """Human label: named as what it is, never an LLM."""
    what = "" if kind == "mixed" else f" ({kind})"
    return f"{OFFLINE_LABEL} with injected herding errors{what}, p={p:g}"


def herding_agents(plan: JointPlan) -> list[int]:
    """Agents of ``plan`` whose route is an injected herding error."""
    return [a.agent_id for a in plan.plans if a.rationale.startswith(HERDING_MARK)]


class FallibleOfflineClient(OfflinePlannerClient):
    """The offline planner whose group plans are replaced by herding with probability ``p``."""

    def __init__(self, net: CityNetwork, view: CityView | None = None,
                 forecast: TrafficForecast | None = None, p: float = 0.0, seed: int = 0,
                 kind: str = "mixed"):
        super().__init__(net, view, forecast)
        if kind not in KINDS:
            raise ValueError(f"unknown herding kind '{kind}'; use {', '.join(KINDS)}")
        self.p, self.seed, self.kind = float(p), int(seed), kind
        self.injections: list[dict] = []  # {round, agents, kind} per replaced group plan
        self._freeflow = False

    def draw(self, run: str, scope: list[int], round_: int) -> str | None:
        """The herding kind injected into this group plan, or None (the planner's plan)."""
        key = zlib.crc32(",".join(map(str, sorted(scope))).encode())
        rng = np.random.default_rng([self.seed, zlib.crc32(run.encode()), key, round_,
                                     HERD_STREAM])
        if rng.random() >= self.p:
            return None
        if self.forecast is None:
            return "freeflow"
        if self.kind != "mixed":
            return self.kind
        return "forecast" if rng.random() < 0.5 else "freeflow"

    def assign(self, agents: dict[int, dict], scope: list[int], verdicts: list[CriticVerdict],
               others: dict[int, list[str]], task: dict) -> JointPlan:
        plan = super().assign(agents, scope, verdicts, others, task)
        round_ = len(verdicts) + 1
        kind = self.draw(str(task.get("run", "")), scope, round_)
        if kind is None:
            return plan
        self.injections.append({"round": round_, "agents": len(scope), "kind": kind})
        return self.herd(agents, scope, task, kind)

    def herd(self, agents: dict[int, dict], scope: list[int], task: dict,
             kind: str) -> JointPlan:
        """Every agent of ``scope`` on its fastest route driven alone (no congestion of its
        own, no spreading): on the forecast (``forecast``) or at free flow (``freeflow``)."""
        dt = float(task.get("dt_s", 5.0))
        beta = float(task.get("bpr", [0.15, 4.0])[1])
        empty = np.zeros((self.net.n_edges, 1), dtype=np.int32)  # nobody else counted
        taste = np.ones(self.net.n_edges)
        self._freeflow = kind == "freeflow"
        try:
            plans = []
            for i in scope:
                a = agents[i]
                o, d = self.view.resolve(a["origin"]), self.view.resolve(a["destination"])
                route, est, _ = self._route(o, d, float(a["departure_s"]), empty, dt, 0.0,
                                            None, taste, 0.0, beta)
                where = "the forecast" if kind == "forecast" else "free flow"
                plans.append(AgentPlan(
                    agent_id=i, route=[str(self.view.osm(n)) for n in route],
                    rationale=f"{HERDING_MARK}: fastest route on {where}, est. {est:.0f} s, "
                    "as if driving alone"))
        finally:
            self._freeflow = False
        return JointPlan(plans=sorted(plans, key=lambda p: p.agent_id))

    def _edge_time(self, e: int, t: float) -> float:
        if self._freeflow:
            return float(self.net.freeflow_s[e])
        return super()._edge_time(e, t)
