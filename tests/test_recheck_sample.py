"""Training's re-check of a stored batch: a batch made on a fleet sample
(DemoMeta.fleet_sample) is judged on that sample, as the team did, not on the whole fleet; the
shortest-path baseline is simulated once and serves as the reference's execution too."""

import numpy as np
import pytest

from relied.agents.generate import generate_demonstrations
from relied.agents.team import TeamConfig
from relied.env.cities import load_city
from relied.env.sample import FleetSample
from relied.env.scenario import Scenario, index_of
from relied.experts import critic
from relied.experts.bound import BoundConfig
from relied.experts.demos import load_batch

# 40 learners among 200 vehicles, 8 planned; the team simulates a sample of about 80
SC = Scenario(city="aguascalientes", n_agents=40, seed=3, min_trip_m=200,
              background_share=0.8, departure_window_s=120)
SAMPLED = TeamConfig(demo_agents=8, group_size=4, bound=BoundConfig(epsilon=2.0),
                     sim_vehicles=80)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RELIED_EXPERT_CACHE", str(tmp_path / "cache"))


def test_a_recheck_judges_a_sampled_batch_on_its_sample(tmp_path, monkeypatch):
    [path] = generate_demonstrations(SC, tmp_path / "demos", config=SAMPLED, use_cache=False)
    _, meta = load_batch(path)
    info = meta.fleet_sample
    assert info is not None
    net = load_city(SC.city)
    seen = []
    real = critic.check_plan

    def spy(net_, scenario, routes, *args, **kw):
        seen.append((net_.name, scenario.n_vehicles, kw.get("agents")))
        return real(net_, scenario, routes, *args, **kw)

    monkeypatch.setattr(critic, "check_plan", spy)
    report = critic.recheck_batch(path, net=net)
    sample = FleetSample.of(net, meta.scenario, info)
    assert seen == [(sample.net.name, len(info.learners) + len(info.background),
                     sample.positions(meta.demo_agents))]
    assert len(report.bounds) == len(info.learners)  # per simulated learner, in sample order
    assert {o.agent_id for o in report.offenders} <= set(meta.demo_agents)  # fleet ids
    monkeypatch.setattr(critic, "check_plan", real)
    routes = sample.routes([index_of(net, r).tolist() for r in meta.routes])
    scales, reference = critic.reference_scales(sample.net, sample.scenario, BoundConfig.
                                                from_stored(meta.extra.get("bound")),
                                                agents=sample.positions(meta.demo_agents))
    direct = real(sample.net, sample.scenario, routes,
                  BoundConfig.from_stored(meta.extra.get("bound")), None,
                  reference=reference, scales=scales,
                  agents=sample.positions(meta.demo_agents))[0]
    assert np.allclose(report.bounds, direct.bounds)
    assert report.plan_bound == pytest.approx(direct.plan_bound)


def test_a_recheck_simulates_the_shortest_path_baseline_once(tmp_path, monkeypatch):
    [path] = generate_demonstrations(Scenario(city="west-oakland", n_agents=8, seed=11),
                                     tmp_path / "demos", use_cache=False)
    runs = []
    real = critic.execute

    def spy(*args, **kw):
        runs.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(critic, "execute", spy)
    report = critic.recheck_batch(path)
    # the free-flow shortest paths once (the baseline, reused as the reference's execution)
    # and the plan once
    assert len(runs) == 2
    monkeypatch.setattr(critic, "execute", real)
    assert critic.recheck_batch(path) == report
