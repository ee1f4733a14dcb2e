"""The training config: round trip, per-algorithm defaults, validation."""

import pytest
from pydantic import ValidationError

from relied.rl.config import TrainConfig


def test_config_round_trip(tmp_path):
    cfg = TrainConfig(city="monaco", n_agents=7, seed=3, algo="leed", lr=1e-3, share="group",
                      n_groups=3, expert_loss="ppo", lambda_decay=0.9)
    cfg.save(tmp_path / "c.json")
    back = TrainConfig.load(tmp_path / "c.json")
    assert back == cfg
    assert back.model_dump() == cfg.model_dump()


def test_algorithm_defaults_are_resolved_and_overridable():
    assert (TrainConfig(algo="reled").weight, TrainConfig(algo="reled").value_filter) == \
        ("dtw", True)
    assert (TrainConfig(algo="leed").weight, TrainConfig(algo="leed").value_filter) == \
        ("fixed", False)
    assert TrainConfig(algo="reled-fixed").weight == "fixed"
    assert TrainConfig(algo="reled-nofilter").spec.demos == "all"
    assert TrainConfig(algo="bc").spec.demos == "accepted"  # bc clones RELED's filtered demos
    assert TrainConfig(algo="tianshou:a2c").engine == "tianshou"
    assert TrainConfig(algo="reled", weight="return").weight == "return"
    assert not TrainConfig(algo="ippo").uses_experts
    assert not TrainConfig(algo="bc").uses_rl


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="algo"):
        TrainConfig(algo="dqn")
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(learning_rate=1.0)
    with pytest.raises(ValidationError, match="lambda_min"):
        TrainConfig(lambda_min=0.9, lambda_max=0.5)


def test_scenario_of_config():
    sc = TrainConfig(city="west-oakland", n_agents=5, seed=4).scenario(seed=9, city="monaco")
    assert (sc.city, sc.n_agents, sc.seed) == ("monaco", 5, 9)


def test_label_names_the_ablation_settings():
    assert TrainConfig(algo="reled").label == "reled"
    assert TrainConfig(algo="leed", weight="fixed").label == "leed"
    assert TrainConfig(algo="reled", weight="return", expert_loss="ppo").label == \
        "reled(weight=return,expert_loss=ppo)"


def test_training_doc_prints_the_algorithm_table_of_the_code():
    from pathlib import Path

    from relied.rl.config import algo_table

    doc = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert algo_table() in doc
