"""The one training configuration: every hyperparameter of a run, saved as ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relied.env.sample import DEFAULT_SIM_VEHICLES
from relied.env.scenario import Scenario
from relied.experts.bound import (
    BOUND_VERSION,
    DEFAULT_GAMMA,
    LOOKAHEAD_VERSION,
    TRIAL_VERSION,
    BoundConfig,
)

#: Bump when the meaning of a stored config changes; older run folders are refused clearly.
CONFIG_VERSION = 3  # 3: observation gained the live-detour slot feature

EXPERT_SPECS = ("'offline', 'auto', 'shortest-path', 'offline-fallible:<p>[:<kind>]' or "
                "'ollama:<model>'")


class AlgoSpec(BaseModel):
    """What an algorithm does. The trainer reads these fields, never the algorithm's name."""

    model_config = ConfigDict(frozen=True)

    ppo: bool = Field(description="PPO on the agents' own rollouts")
    expert_loss: bool = Field(description="imitation term on the expert buffer")
    demos: Literal["accepted", "all", "none"] = Field(
        description="accepted: batches the stationarity critic accepted (best-bound batches "
        "when none was); all: every batch")
    weight: Literal["dtw", "fixed", "one", "none"] = Field(
        description="expert weight lambda: per agent and scenario from DTW to the expert's "
        "route; fixed decaying (LEED); 1 (BC)")
    value_filter: bool = Field(description="an expert transition counts only while its return "
                               "beats the value estimate")
    central_value: bool = Field(description="value function also sees the global state "
                                "(vehicles / storage of every edge): MAPPO")
    engine: Literal["fast", "tianshou"] = "fast"
    summary: str


ALGO_SPECS: dict[str, AlgoSpec] = {
    "reled": AlgoSpec(ppo=True, expert_loss=True, demos="accepted", weight="dtw",
                      value_filter=True, central_value=False,
                      summary="RELED: PPO + stationarity-filtered demos, DTW lambda"),
    "reled-nofilter": AlgoSpec(ppo=True, expert_loss=True, demos="all", weight="dtw",
                               value_filter=True, central_value=False,
                               summary="ablation: RELED without the critic's filter"),
    "reled-fixed": AlgoSpec(ppo=True, expert_loss=True, demos="accepted", weight="fixed",
                            value_filter=True, central_value=False,
                            summary="ablation: RELED with LEED's fixed decaying lambda"),
    "leed": AlgoSpec(ppo=True, expert_loss=True, demos="all", weight="fixed",
                     value_filter=False, central_value=False,
                     summary="LEED: PPO + all demos, fixed decaying lambda"),
    "ippo": AlgoSpec(ppo=True, expert_loss=False, demos="none", weight="none",
                     value_filter=False, central_value=False,
                     summary="independent PPO, no demos"),
    "mappo": AlgoSpec(ppo=True, expert_loss=False, demos="none", weight="none",
                      value_filter=False, central_value=True,
                      summary="PPO with a centralised value function, no demos"),
    "bc": AlgoSpec(ppo=False, expert_loss=True, demos="accepted", weight="one",
                   value_filter=False, central_value=False,
                   summary="behaviour cloning of RELED's (accepted) demos"),
    "tianshou:ppo": AlgoSpec(ppo=True, expert_loss=False, demos="none", weight="none",
                             value_filter=False, central_value=False, engine="tianshou",
                             summary="Tianshou's PPO (docs/tianshou.md)"),
    "tianshou:a2c": AlgoSpec(ppo=True, expert_loss=False, demos="none", weight="none",
                             value_filter=False, central_value=False, engine="tianshou",
                             summary="Tianshou's A2C (docs/tianshou.md)"),
}
Algo = Literal["reled", "reled-nofilter", "reled-fixed", "leed", "ippo", "mappo", "bc",
               "tianshou:ppo", "tianshou:a2c"]
ALGOS: tuple[str, ...] = tuple(ALGO_SPECS)
USES_EXPERTS = {name for name, spec in ALGO_SPECS.items() if spec.expert_loss}
ABLATIONS = ("weight", "expert_loss", "value_filter", "lambda0", "lambda_min", "lambda_decay",
             "dtw_scale_km")
#: Scenario fields a preset sets unless the config gives them.
SCENARIO_FIELDS = ("city", "n_agents", "horizon_s", "departure_window_s", "background_share",
                   "dt_s", "traffic_model")


def algo_table() -> str:
    """The algorithm table as Markdown (docs/training.md prints it)."""
    fields = [f for f in AlgoSpec.model_fields if f != "summary"]
    rows = ["| algo | " + " | ".join(fields) + " | what it is |",
            "|" + "---|" * (len(fields) + 2)]
    for name, spec in ALGO_SPECS.items():
        cells = [str(getattr(spec, f)).lower() if isinstance(getattr(spec, f), bool)
                 else str(getattr(spec, f)) for f in fields]
        rows.append(f"| `{name}` | " + " | ".join(cells) + f" | {spec.summary} |")
    return "\n".join(rows)


class TrainConfig(BaseModel):
    """City, agents, algorithm, expert model, budget and every PPO / hybrid hyperparameter.

    ``weight`` and ``value_filter`` default by algorithm (:data:`ALGO_SPECS`) and are stored
    resolved, so ``config.json`` shows what ran. With ``preset`` the scenario fields not given
    come from the preset.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    config_version: int = CONFIG_VERSION
    # problem
    preset: str | None = Field(None, description="benchmark scenario the problem starts from; "
                               "the scenario fields given here override it")
    city: str = Field("aguascalientes", description="shipped name, place:<query>, or an OSM "
                      "file (stored as an absolute path when a run is created)")
    city_sha256: str | None = Field(None, description="SHA-256 of the city's source file, "
                                    "recorded when the run is created and checked on resume/eval")
    n_agents: int = Field(20, ge=1, le=100_000)
    seed: int = Field(0, ge=0, lt=2**32)
    train_seeds: int | None = Field(None, ge=1, description="None: fresh trips every "
                                    "iteration; N: cycle over the fixed scenarios seed..seed+N-1")
    demo_scenarios: int = Field(4, ge=1, description="with fresh trips: scenarios (seed, "
                                "seed+1, ...) the experts demonstrate")
    heldout_seeds: int = Field(3, ge=0, description="held-out scenarios (seed+1000, ...) the "
                               "summary evaluates on")
    horizon_s: float = Field(1800.0, gt=0)
    departure_window_s: float = Field(0.0, ge=0)
    background_share: float = Field(0.0, ge=0, lt=1)
    dt_s: float = Field(1.0, gt=0, le=60)
    traffic_model: Literal["queue", "bpr"] = "queue"
    # algorithm and experts
    algo: Algo = "reled"
    experts: str = Field("offline", description=f"expert-team model spec: {EXPERT_SPECS}")
    ollama_host: str | None = Field(None, description="Ollama URL (default $OLLAMA_HOST or "
                                    "127.0.0.1:11434)")
    timeout_s: float = Field(120.0, gt=0, description="seconds per expert model call")
    epsilon: float = Field(BoundConfig().epsilon, gt=0,
                           description="the critic's threshold: a plan passes when the mean "
                           "of its agents' scaled bounds is strictly below epsilon times that "
                           "of the learners' current behaviour")
    bound_version: int = Field(BOUND_VERSION, ge=TRIAL_VERSION, le=LOOKAHEAD_VERSION,
                               description="the critic's bound: 6, the measured lookahead of "
                               "the learners' whole next update (default); 5, the analytic "
                               "bound with their trial update (docs/experts.md)")
    demo_batches: int = Field(1, ge=1)
    demo_agents: int | None = Field(500, ge=1, description="most learners the expert team "
                                    "plans and demonstrates per scenario: above it a seeded "
                                    "sample, the same share from every planner block; the "
                                    "others drive shortest paths (None: all)")
    sim_vehicles: int | None = Field(DEFAULT_SIM_VEHICLES, ge=1, description="most vehicles "
                                     "the expert team simulates: a larger fleet is simulated "
                                     "as a seeded sample of about this many on the network "
                                     "with capacities scaled by its share (None: never "
                                     "sample)")
    demos_dir: str | None = Field(None, description="load this demo store instead of generating")
    bound_every: int = Field(0, ge=0, description="every N iterations re-check the demos' "
                             "stationarity bound under the current policies (0: never)")
    regen_every: int = Field(0, ge=0, description="every K iterations ask the expert team for new "
                             "demos with the learners' policies and routes (0: never)")
    # policy
    share: Literal["none", "group", "all"] = Field(
        "all", description="all: one network for every agent (+ agent id), what generalises to "
        "new trips; group: n_groups; none: one network per agent (the paper's setting)")
    n_groups: int = Field(4, ge=1)
    hidden: int = Field(64, ge=4)
    id_embed: int = Field(8, ge=0, description="agent-id embedding size (share='all'; 0: none)")
    # sampling
    total_steps: int = Field(40_000, ge=1, description="budget in simulator steps (all envs)")
    n_envs: int = Field(2, ge=1)
    vector: Literal["dummy", "subproc", "ray"] = "dummy"
    backend: Literal["core", "sumo", "sumo-meso"] = Field(
        "core", description="simulator of the training envs: the core, or SUMO micro/meso "
        "(slow; one SUMO per env worker, docs/sumo.md)")
    engine: Literal["fast", "tianshou"] = Field(
        "fast", description="fast: relied's batched loop; tianshou: Tianshou's collector, "
        "trainer and PPO subclass (docs/tianshou.md)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="torch device of the policy, rollout buffers and update (the "
        "traffic core stays numpy): auto picks CUDA when available")
    # PPO
    lr: float = Field(3e-3, gt=0)
    gamma: float = Field(DEFAULT_GAMMA, gt=0, le=1, description="discount per decision, "
                         "shared with the stationarity bound")
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
    value_filter: bool | None = None
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
        if spec.startswith("offline-fallible:"):  # the stress-test expert (docs/experts.md)
            from relied.agents.clients import ModelError, check_spec

            try:
                return check_spec(spec)
            except ModelError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError(f"unknown expert model; use {EXPERT_SPECS}")

    @model_validator(mode="after")
    def _resolve(self) -> TrainConfig:
        spec = self.spec
        if self.weight is None:
            self.weight = "dtw" if spec.weight == "dtw" else "fixed"
        if self.value_filter is None:
            self.value_filter = spec.value_filter
        if self.lambda_min > self.lambda_max:
            raise ValueError("lambda_min must not exceed lambda_max")
        if self.regen_every and (self.experts == "shortest-path" or self.demos_dir):
            raise ValueError("regen_every needs the expert team (--experts MODEL, no --demos)")
        if spec.engine == "tianshou" and self.engine != "tianshou":
            self.engine = "tianshou"  # Tianshou's own algorithms run on its engine only
        if self.departure_window_s >= self.horizon_s:
            raise ValueError(f"departure_window_s ({self.departure_window_s:g}) must be shorter "
                             f"than horizon_s ({self.horizon_s:g})")
        if not self.uses_experts:
            for name in ("demos_dir", "bound_every", "regen_every"):
                if getattr(self, name):
                    raise ValueError(f"{name} is only used by {', '.join(sorted(USES_EXPERTS))};"
                                     f" drop it for algo={self.algo}")
        if self.demos_dir:  # a demo store holds one scenario's demos
            if self.train_seeds not in (None, 1):
                raise ValueError("demos_dir holds one scenario's demos: use it with "
                                 "train_seeds=1 or fresh trips")
            self.demo_scenarios = 1
        return self

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data):
        """Fill the scenario fields the config does not give from its preset."""
        if isinstance(data, dict) and data.get("preset"):
            from relied.env.presets import load_preset

            base = load_preset(str(data["preset"])).scenario
            data = {k: getattr(base, k) for k in SCENARIO_FIELDS} | data
        return data

    @property
    def spec(self) -> AlgoSpec:
        return ALGO_SPECS[self.algo]

    @property
    def uses_experts(self) -> bool:
        return self.spec.expert_loss

    @property
    def uses_rl(self) -> bool:
        return self.spec.ppo

    @property
    def fresh_trips(self) -> bool:
        return self.train_seeds is None

    def training_seed(self, iteration: int) -> int:
        """Seed of the trips of ``iteration`` (fresh trips): its own stream, apart from the
        demonstrated (seed + j) and held-out (seed + 1000 + j) scenarios."""
        return int(np.random.SeedSequence([self.seed, 7, iteration]).generate_state(1)[0])

    def iteration_scenario(self, iteration: int) -> Scenario:
        """The trips of training iteration ``iteration`` (both engines): fresh ones
        (:meth:`training_seed`), or with ``train_seeds = N`` fixed scenario
        ``seed + iteration mod N``."""
        if self.fresh_trips:
            return self.scenario(seed=self.training_seed(iteration))
        pool = self.pool_seeds()
        return self.scenario(seed=pool[iteration % len(pool)])

    def pool_seeds(self) -> list[int]:
        """Seeds of the fixed scenarios: the training pool, or the demonstrated ones."""
        return [self.seed + j for j in range(self.train_seeds or self.demo_scenarios)]

    def heldout(self) -> list[int]:
        return [self.seed + 1000 + j for j in range(self.heldout_seeds)]

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
                        departure_window_s=self.departure_window_s,
                        background_share=self.background_share, dt_s=self.dt_s,
                        traffic_model=self.traffic_model)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read ``config.json``; a config of another version is refused with one line."""
        text = Path(path).read_text()
        try:
            data = json.loads(text)
            version = data.get("config_version", 1)
        except (json.JSONDecodeError, AttributeError):
            return cls.model_validate_json(text)  # let validation name the problem
        if version != CONFIG_VERSION:
            raise ValueError(f"'{path}' was written by another relied version (config version "
                             f"{version}, this one reads {CONFIG_VERSION}); train the run again")
        data.setdefault("bound_version", TRIAL_VERSION)  # stored since v6: before it, 5 ran
        return cls.model_validate(data)
