"""The core's fixed-time signal plans as SUMO traffic-light programs (``signal_plans="core"``).

netconvert builds its own programs for the SUMO net (protected left-turn phases, 4-10 phases at
five-approach junctions, 13-49% green per link: benchmarks/results/sumo_gridlock.md). With
``signal_plans="core"`` the SUMO backends replace each of them, at the start of the run
(``trafficlight.setProgramLogic``), by a static program built from the core's plan
(:func:`relied.env.signals.signal_plan`): same 90 s cycle from offset 0, and each link of a SUMO
traffic light green exactly while the core's approach it leaves from is green, then yellow for
the core's yellow, then red. The approach of a link is the core edge whose SUMO fragment ends on
the link's incoming edge (:class:`relied.env.sumo.network.SumoNetwork`).

The core greens a whole approach at once (left turns included) and opposite approaches together,
so left turns and U-turns get ``g`` (green, yield to the oncoming streams) and the other links
``G`` (priority). A link no core signal covers (its approach is unmapped, inside a core signal
cluster, or not signalised in the core) is green-yield (``g``) all cycle long, as the core lets
it pass at its priority rules; each such link is listed in :class:`ProgramReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from relied.env.signals import SignalPlan

#: SUMO link directions that cross the oncoming stream: green-yield (``g``) when green.
YIELD_DIRECTIONS = frozenset({"l", "L", "t"})
#: Breakpoints closer than this (s) are one.
EPS_S = 1e-6


@dataclass
class LinkSchedule:
    """When one SUMO link is green and yellow within the cycle (``None``: no core signal)."""

    start_s: float
    green_s: float
    yellow_s: float

    def state(self, t: float, cycle_s: float, yields: bool) -> str:
        u = (t - self.start_s) % cycle_s
        if u < self.green_s:
            return "g" if yields else "G"
        return "y" if u < self.green_s + self.yellow_s else "r"


@dataclass
class ProgramReport:
    """What the core's plans cover of SUMO's traffic lights: programs replaced, links given the
    core's schedule, and every link left green-yield with why (``(tls, link index, reason)``)."""

    programs: int = 0
    links: int = 0
    scheduled: int = 0
    uncovered: list[tuple[str, int, str]] = field(default_factory=list)

    def summary(self) -> dict:
        reasons: dict[str, int] = {}
        for _, _, why in self.uncovered:
            reasons[why] = reasons.get(why, 0) + 1
        return {"programs": self.programs, "links": self.links, "scheduled": self.scheduled,
                "uncovered": reasons}

    def line(self) -> str:
        out = f"core signal plans: {self.programs} SUMO programs, {self.scheduled}/{self.links}" \
              " links on the core's schedule"
        if self.uncovered:
            out += "; green-yield all cycle: " + ", ".join(
                f"{n} {why}" for why, n in self.summary()["uncovered"].items())
        return out


def approach_edges(sumo_net) -> dict[int, int]:
    """Core edge arriving by each SUMO edge (the last edge of its fragment; a controlled
    core edge wins where fragments share their last edge)."""
    out: dict[int, int] = {}
    for e in np.flatnonzero(sumo_net.real).tolist():
        out.setdefault(int(sumo_net.last[e]), e)
    return out


def link_schedule(plan: SignalPlan, sumo_net, approach: dict[int, int],
                  in_edge: str) -> tuple[LinkSchedule | None, str]:
    """The core's schedule of a SUMO link leaving ``in_edge``, or ``None`` and why not."""
    s = sumo_net.index.get(in_edge)
    e = approach.get(s) if s is not None else None
    if e is None:
        return None, "approach not mapped to a core edge"
    if plan.inside[e]:
        return None, "approach inside a core signal cluster"
    if not plan.controlled[e]:
        return None, "approach not signalised in the core"
    return LinkSchedule(float(plan.start_s[e]), float(plan.green_s[e]),
                        float(plan.yellow_s[e])), ""


def build_program(schedules: list[LinkSchedule | None], yields: list[bool],
                  cycle_s: float) -> list[tuple[float, str]]:
    """Phases ``(duration, state)`` of one static program over ``cycle_s`` from offset 0: a
    phase between each two successive switches of any link's schedule."""
    cuts = {0.0}
    for sch in schedules:
        if sch is not None:
            for t in (sch.start_s, sch.start_s + sch.green_s,
                      sch.start_s + sch.green_s + sch.yellow_s):
                cuts.add(round(t % cycle_s, 6))
    times = sorted(cuts)
    bounds = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > EPS_S] + [cycle_s]
    phases = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b - a <= EPS_S:
            continue
        mid = 0.5 * (a + b)
        state = "".join("r" if sch is None and y is None else
                        ("g" if sch is None else sch.state(mid, cycle_s, y))
                        for sch, y in zip(schedules, yields, strict=True))
        phases.append((b - a, state))
    return phases


def apply_core_programs(traci, sumo_net, plan: SignalPlan) -> ProgramReport:
    """Replace every SUMO traffic-light program by the core's plan (see the module doc)."""
    report = ProgramReport()
    approach = approach_edges(sumo_net)
    tl = traci.trafficlight
    for tls in tl.getIDList():
        links = tl.getControlledLinks(tls)
        schedules: list[LinkSchedule | None] = []
        yields: list[bool | None] = []
        for i, group in enumerate(links):
            if not group:  # an index no connection uses
                schedules.append(None)
                yields.append(None)
                continue
            in_lane, out_lane, _ = group[0]
            report.links += 1
            sch, why = link_schedule(plan, sumo_net, approach, traci.lane.getEdgeID(in_lane))
            direction = next((lk[6] for lk in traci.lane.getLinks(in_lane)
                              if lk[0] == out_lane), "s")
            schedules.append(sch)
            yields.append(direction in YIELD_DIRECTIONS)
            if sch is None:
                report.uncovered.append((tls, i, why))
            else:
                report.scheduled += 1
        phases = [tl.Phase(d, s) for d, s in build_program(schedules, yields, plan.cycle_s)]
        tl.setProgramLogic(tls, tl.Logic("core", 0, 0, phases))
        tl.setProgram(tls, "core")
        report.programs += 1
    return report


def green_share(phases: list[tuple[float, str]], link: int) -> float:
    """Share of the cycle a link is green (``G`` or ``g``) in ``phases``."""
    total = sum(d for d, _ in phases)
    return sum(d for d, s in phases if s[link] in "Gg") / total
