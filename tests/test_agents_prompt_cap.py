"""The planners' load table capped to the prompt budget: prompts that fit are unchanged, a capped
table stays under its limit whatever the fleet, and it keeps the corridors that matter."""

import asyncio
import hashlib
import json

import numpy as np
import pytest

from relied.agents import clients
from relied.agents.clients import make_client
from relied.agents.offline import OfflinePlannerClient
from relied.agents.prompt import REST_KEY, estimate_tokens
from relied.agents.team import ExpertTeam, PlanBoard, TeamConfig
from relied.agents.view import CityView
from relied.env.cities import load_city
from relied.env.core import RoutingCore
from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig

CITY = "aguascalientes"
SC = Scenario(city=CITY, n_agents=24, seed=3, min_trip_m=200)
# sha256 of json.dumps(team.prompts) at commit 91a1f8c, before the cap existed
BEFORE_CAP = {6: "d798724daba588d6406cb9423c226c74d4f3b2440131892ce4a677322dbfcf9e",
              4: "445354dafe9521546c59a4a9d6f112e42f244761452d13e780c962db9d170cd5"}


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def view():
    return CityView(load_city(CITY))


def _team(view, config, scenario=SC):
    net = view.net
    return ExpertTeam(RoutingCore(net, scenario), view, make_client("offline", net, view), config)


def _pairs(rows: dict[str, str], view: CityView) -> dict[tuple[int, int], int]:
    """A load table back as ``{(zone a, zone b): vehicles}`` (the rest line left out)."""
    index = {lab: i for i, lab in enumerate(view.labels)}
    out = {}
    for a, text in rows.items():
        if a != REST_KEY:
            for item in text.split():
                b, v = item.split(":")
                out[(index[a], index[b])] = int(v)
    return out


def _corridors(view: CityView, edges: np.ndarray) -> set[tuple[int, int]]:
    net = view.net
    return {(int(view.zone[net.edge_src[e]]), int(view.zone[net.edge_dst[e]])) for e in edges}


def test_prompts_that_fit_are_byte_identical_to_before_the_cap(view, monkeypatch):
    for size, digest in BEFORE_CAP.items():
        config = (TeamConfig(group_size=6) if size == 6
                  else TeamConfig(demo_agents=8, group_size=4))
        team = _team(view, config)
        assert hashlib.sha256(json.dumps(team.prompts).encode()).hexdigest() == digest
        assert team.board.limits == {}

    def no_cap(*a, **kw):
        raise AssertionError("the load table was capped")

    # three rounds with feedback (the other planners' plans as loads): the cap never engages
    monkeypatch.setattr(PlanBoard, "_capped", no_cap)
    out = asyncio.run(_team(view, TeamConfig(group_size=6,
                                             bound=BoundConfig(epsilon=0.01))).run())
    assert out.rounds == 3 and out.model_calls == 12


def _synthetic_board(view: CityView, others: int, seed: int = 0) -> PlanBoard:
    """Agent 0 on a free-flow route; ``others`` agents each on 20 random edges."""
    rng = np.random.default_rng(seed)
    net = view.net
    route = view.shortest(0, net.n_nodes // 2)
    mine = np.array([net.edge_between(u, v) for u, v in zip(route[:-1], route[1:],
                                                                 strict=True)])
    return PlanBoard(view, [mine] + [rng.choice(net.n_edges, 20, replace=False)
                                     for _ in range(others)])


def test_a_capped_table_stays_under_its_limit_as_the_fleet_grows(view):
    limit, full_tokens = 250, []
    for others in (100, 1_000, 10_000):
        board = _synthetic_board(view, others)
        full = board.others_load([0], {})
        full_tokens.append(estimate_tokens(json.dumps(full)))
        board.limits = {(0,): limit}
        capped = board.others_load([0], {})
        assert estimate_tokens(json.dumps(capped)) <= limit
        kept = _pairs(capped, view)
        n, vehicles = (int(x.split(":")[1]) for x in capped[REST_KEY].split())
        assert len(kept) + n == len(_pairs(full, view))  # every corridor listed or counted
        assert sum(kept.values()) + vehicles == others * 20  # every vehicle-edge counted
    assert full_tokens[0] < full_tokens[-1] and full_tokens[-1] > 2 * limit  # it did grow
    board.limits = {(0,): 10 * full_tokens[-1]}  # room enough: the whole table, unchanged
    assert board.others_load([0], {}) == full and REST_KEY not in full


def test_the_cap_keeps_the_group_corridors_then_the_busiest(view):
    net = view.net
    board = _synthetic_board(view, 0)
    mine = board.estimate[0]
    on = _corridors(view, mine)
    near = {z for pair in on for z in pair}
    far = np.flatnonzero([(int(view.zone[net.edge_src[e]]) not in near
                           and int(view.zone[net.edge_dst[e]]) not in near)
                          for e in range(net.n_edges)])
    rng = np.random.default_rng(1)
    # one light vehicle on the group's route; heavy traffic of many sizes far away
    board.estimate.append(mine[::2])
    for _ in range(60):
        edges = rng.choice(far, 3, replace=False)
        board.estimate += [edges] * int(rng.integers(5, 200))
    full = _pairs(board.others_load([0], {}), view)
    board.limits = {(0,): 200}
    capped = board.others_load([0], {})
    kept = _pairs(capped, view)
    assert REST_KEY in capped and len(kept) < len(full)
    light = {p for p in on if p in full}
    assert light and light <= set(kept)  # the group's own corridors, though the lightest
    assert all(kept[p] == full[p] for p in kept)
    dropped = set(full) - set(kept)
    busiest_dropped = max(full[p] for p in dropped if p not in on)
    assert all(full[p] >= busiest_dropped for p in kept if p not in on)  # then by load
    assert board.cut == {(0,): 0}


def test_a_team_over_budget_caps_its_tables_and_every_prompt_fits(view, monkeypatch):
    scenario = SC.model_copy(update={"n_agents": 300})
    config = TeamConfig(demo_agents=40, group_size=10, max_rounds=2,
                        bound=BoundConfig(epsilon=0.01))
    whole = _team(view, config, scenario)  # the real budget holds the whole tables
    assert whole.board.limits == {}
    one = whole.sampled[:1]
    budget = whole.worst_case_tokens(one, *whole._prompts([one])[0])[0] - 150
    monkeypatch.setattr(clients, "PROMPT_BUDGET", budget)
    with monkeypatch.context() as m:  # without the cap not even one agent fits
        m.setattr(PlanBoard, "_capped", lambda self, group, load, limit: self.view.load_rows(load))
        with pytest.raises(clients.ModelError, match="a planner prompt for one agent needs"):
            _team(view, config, scenario)
    team = _team(view, config, scenario)
    assert set(team.board.limits) == {tuple(g) for g in team.groups}
    assert all(team.worst_case_tokens(g, *p)[0] <= budget
               for g, p in zip(team.groups, team.prompts, strict=True))
    sent = []
    real = OfflinePlannerClient.create

    async def create(self, messages, **kw):
        sent.append("".join(m.content for m in messages if isinstance(m.content, str)))
        return await real(self, messages, **kw)

    monkeypatch.setattr(OfflinePlannerClient, "create", create)
    out = asyncio.run(team.run())
    assert out.rounds == 2 and len(sent) == 2 * len(team.groups)
    assert all(estimate_tokens(text) <= budget for text in sent)
    assert all(f'"{REST_KEY}":"corridors:' in text for text in sent)
    assert {p.agent_id for p in out.plan.plans} == set(team.sampled)
