"""Training goes on when no plan passed the critic: the best-bound batch is used, counted."""

from pathlib import Path

from relied.env.scenario import Scenario
from relied.experts.demos import DemoMeta
from relied.rl.demos import select_batches


def _meta(name, accepted, bounds, fallback=False):
    return DemoMeta(batch_id=name, scenario=Scenario(n_agents=3), routes=[[1, 2]] * 3,
                    model_spec="offline", source="expert-team", accepted=accepted,
                    verdict={"bounds": {str(i): b for i, b in enumerate(bounds)}},
                    extra={"fallback": fallback, "bound": {"quantile": 1.0}})


def test_accepted_batches_win_and_the_best_rejected_one_is_the_fallback(capsys):
    worse = (Path("a.json"), None, _meta("a", False, [5.0, 9.0, 1.0]))
    better = (Path("b.json"), None, _meta("b", False, [5.0, 6.0, 1.0]))
    good = (Path("c.json"), None, _meta("c", True, [50.0, 60.0, 10.0]))
    assert select_batches([worse, better, good], True) == ([good], 0)
    assert select_batches([worse, better], False) == ([worse, better], 0)
    chosen, count = select_batches([worse, better], True)
    assert chosen == [better] and count == 1
    assert "fallback" in capsys.readouterr().err
    marked = (Path("d.json"), None, _meta("d", False, [7.0, 7.0, 7.0], fallback=True))
    assert select_batches([better, marked], True)[0] == [marked]  # the team's own choice
