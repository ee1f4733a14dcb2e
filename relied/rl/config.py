"""The one training configuration: every hyperparameter of a run, saved as ``config.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relied.env.scenario import Scenario
from relied.experts.bound import BoundConfig

Algo = Literal["reled", "leed", "ippo", "bc", "mappo", "tianshou:ppo", "tianshou:a2c"]
ALGOS: tuple[str, ...] = ("reled", "leed", "ippo", "bc", "mappo", "tianshou:ppo", "tianshou:a2c")
USES_EXPERTS = {"reled", "leed", "bc"}
EXPERT_SPECS = "'offline', 'auto', 'shortest-path' or 'ollama:<model>'"
ABLATIONS = ("weight", "expert_loss", "critic_filter", "lambda0", "lambda_min", "lambda_decay",
             "dtw_scale_km")


class TrainConfig(BaseModel):
    """City, agents, algorithm, expert model, budget and every PPO / hybrid hyperparameter.

    ``weight`` and ``critic_filter`` default by algorithm (``reled``: ``dtw`` and on, ``leed``:
    ``fixed`` and off) and are stored resolved, so ``config.json`` shows what ran.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # problem
    city: str = Field("aguascalientes", description="shipped name, place:<query>, or an OSM "
                      "file (stored as an absolute path when a run is created)")
    city_sha256: str | None = Field(None, description="SHA-256 of the city's source file, "
                                    "recorded when the run is created and checked on resume/eval")
    n_agents: int = Field(20, ge=1, le=100_000)
    seed: int = Field(0, ge=0, lt=2**32)
    train_seeds: int = Field(1, ge=1, description="OD scenarios seed, seed+1, ... cycled over "
                             "iterations (more trips seen: better transfer to new ones)")
    horizon_s: float = Field(1800.0, gt=0)
    departure_window_s: float = Field(0.0, ge=0)
    # algorithm and experts
    algo: Algo = "reled"
    experts: str = Field("offline", description=f"expert-team model spec: {EXPERT_SPECS}")
    ollama_host: str | None = Field(None, description="Ollama URL (default $OLLAMA_HOST or "
                                    "127.0.0.1:11434)")
    timeout_s: float = Field(120.0, gt=0, description="seconds per expert model call")
    epsilon: float = Field(BoundConfig().epsilon, gt=0,
                           description="the critic's stationarity bound threshold")
    demo_batches: int = Field(1, ge=1)
    demos_dir: str | None = Field(None, description="load this demo store instead of generating")
    bound_every: int = Field(0, ge=0, description="every N iterations re-check the demos' "
                             "stationarity bound under the current policies (0: never)")
    regen_every: int = Field(0, ge=0, description="every K iterations ask the expert team for new "
                             "demos with the learners' policies and routes (0: never)")
    # policy
    share: Literal["none", "group", "all"] = Field(
        "none", description="none: one network per agent; group: n_groups; all: one + agent id")
    n_groups: int = Field(4, ge=1)
    hidden: int = Field(64, ge=4)
    id_embed: int = Field(8, ge=0, description="agent-id embedding size (share='all'; 0: none)")
    # sampling
    total_steps: int = Field(20_000, ge=1, description="budget in simulator steps (all envs)")
    n_envs: int = Field(2, ge=1)
    vector: Literal["dummy", "subproc", "ray"] = "dummy"
    backend: Literal["core", "sumo", "sumo-meso"] = Field(
        "core", description="simulator of the training envs: the core, or SUMO micro/meso "
        "(slow; one SUMO per env worker, docs/sumo.md)")
    engine: Literal["fast", "tianshou"] = Field(
        "fast", description="fast: relied's batched loop; tianshou: Tianshou's collector, "
        "trainer and PPO subclass (docs/tianshou.md)")
    # PPO
    lr: float = Field(3e-3, gt=0)
    gamma: float = Field(0.99, gt=0, le=1, description="discount per decision")
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    epochs: int = Field(4, ge=1)
    minibatch: int = Field(512, ge=8)
    vf_coef: float = Field(0.5, ge=0)
    ent_coef: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    # hybrid expert loss and its weight lambda_i(t)
    expert_loss: Literal["bc", "ppo"] = "bc"
    weight: Literal["dtw", "return", "fixed"] | None = None
    critic_filter: bool | None = None
    lambda0: float = Field(1.0, ge=0)
    lambda_min: float = Field(0.1, ge=0, description="floor: the expert stays an anchor")
    lambda_max: float = Field(1.0, ge=0)
    lambda_decay: float = Field(0.99, gt=0, le=1, description="factor per iteration")
    dtw_scale_km: float = Field(0.3, gt=0)
    return_temp: float = Field(1.0, gt=0)
    expert_batch: int = Field(256, ge=1)
    # bookkeeping
    keep_checkpoints: int = Field(2, ge=1)

    @field_validator("experts")
    @classmethod
    def _known_spec(cls, spec: str) -> str:
        if spec in ("offline", "auto", "shortest-path") or \
                (spec.startswith("ollama:") and spec[len("ollama:"):].strip()):
            return spec
        raise ValueError(f"unknown expert model; use {EXPERT_SPECS}")

    @model_validator(mode="after")
    def _resolve(self) -> TrainConfig:
        if self.weight is None:
            self.weight = "dtw" if self.algo == "reled" else "fixed"
        if self.critic_filter is None:
            self.critic_filter = self.algo == "reled"
        if self.lambda_min > self.lambda_max:
            raise ValueError("lambda_min must not exceed lambda_max")
        if self.regen_every and (self.experts == "shortest-path" or self.demos_dir):
            raise ValueError("regen_every needs the expert team (--experts MODEL, no --demos)")
        if self.departure_window_s >= self.horizon_s:
            raise ValueError(f"departure_window_s ({self.departure_window_s:g}) must be shorter "
                             f"than horizon_s ({self.horizon_s:g})")
        if not self.uses_experts:
            for name in ("demos_dir", "bound_every", "regen_every"):
                if getattr(self, name):
                    raise ValueError(f"{name} is only used by {', '.join(sorted(USES_EXPERTS))};"
                                     f" drop it for algo={self.algo}")
        if self.demos_dir and self.train_seeds > 1:
            raise ValueError("demos_dir holds one scenario's demos: use it with train_seeds=1")
        return self

    @property
    def uses_experts(self) -> bool:
        return self.algo in USES_EXPERTS

    @property
    def uses_rl(self) -> bool:
        return self.algo != "bc"

    @property
    def label(self) -> str:
        """The algorithm name plus the ablation fields that differ from its defaults."""
        base = TrainConfig(algo=self.algo)
        diff = [f"{k}={getattr(self, k)}" for k in ABLATIONS
                if getattr(self, k) != getattr(base, k)]
        return f"{self.algo}({','.join(diff)})" if diff else self.algo

    def scenario(self, seed: int | None = None, city: str | None = None,
                 n_agents: int | None = None) -> Scenario:
        return Scenario(city=city or self.city, n_agents=n_agents or self.n_agents,
                        seed=self.seed if seed is None else seed, horizon_s=self.horizon_s,
                        departure_window_s=self.departure_window_s)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.model_validate_json(Path(path).read_text())
