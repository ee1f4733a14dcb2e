"""All agents of one simulator as one gymnasium env, and Tianshou vector envs of them.

The env's observation is the ``(n, obs_dim + K + 1)`` matrix of every agent's observation and
action mask; its action is one slot per agent; its reward is the ``(n,)`` vector of per-agent
rewards (the core's mask, the one every face of the env uses); ``info["node"]`` is each
agent's decision node (and at the end ``info["metrics"]``,
``info["arrived"]``). Tianshou's vector envs
(``DummyVectorEnv``, ``SubprocVectorEnv``, ``RayVectorEnv``) stack these per env, so the
learner sees ``(n_envs, n, ...)`` arrays and acts for all agents in one forward pass.
``decisions_only`` (the fast trainer's rollout, which reads deciding agents' rows alone) builds
the observation of the agents whose mask offers an out-edge only; the other rows are 0 (their
mask is whole).
``--vector ray`` joins the cluster at ``$RAY_ADDRESS`` or starts a loopback-only local Ray.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from relied.env.cities import load_city
from relied.env.core import ARRIVED, OBS_HIGH, OBS_LOW, RoutingCore
from relied.env.network import CityNetwork
from relied.env.scenario import Scenario

VECTORS = ("dummy", "subproc", "ray")


class VectorEnvError(RuntimeError):
    """A vector-env backend that cannot start (e.g. Ray not installed)."""


class BatchRoutingEnv(gym.Env):
    """One :class:`RoutingCore` with all its agents as one (vector-valued) env. The city is
    loaded once; ``with_state`` adds ``info["state"]``, vehicles / storage of every edge (the
    global state of MAPPO's value function). ``backend`` ``sumo``/``sumo-meso`` simulates in SUMO
    (:mod:`relied.env.sumo`; one SUMO per process, slow). ``decisions_only``: observe the
    deciding agents' rows only (see the module docstring). ``net``: the network, loaded (default:
    loaded by the scenario's city name; e.g. a fleet sample's scaled copy)."""

    def __init__(self, scenario: Scenario, with_state: bool = False, backend: str = "core",
                 decisions_only: bool = False, net: CityNetwork | None = None):
        self.net = net if net is not None else load_city(scenario.city)
        self.city = scenario.city
        self.with_state = with_state
        self.backend = backend
        self.decisions_only = decisions_only
        self.core = self._core(scenario)
        n, k = self.core.n, self.core.k
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (n, self.core.obs_dim + k + 1),
                                            np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(n, k + 1))

    def _core(self, scenario: Scenario) -> RoutingCore:
        if self.backend == "core":
            return RoutingCore(self.net, scenario)
        from relied.env.sumo import make_core

        return make_core(self.net, scenario, self.backend)

    def _obs(self, obs: np.ndarray | None) -> np.ndarray:
        """The env's observation from the core's full one, or (``obs`` None) from the deciding
        agents' rows alone."""
        mask = self.core.action_mask()
        if obs is not None:
            return np.concatenate([obs, mask.astype(np.float32)], axis=1)
        dim = self.core.obs_dim
        out = np.zeros((self.core.n, dim + mask.shape[1]), dtype=np.float32)
        out[:, dim:] = mask
        rows = np.flatnonzero(mask[:, : self.core.k].any(axis=1))
        out[rows, :dim] = self.core.observe(rows)
        return out

    def _info(self) -> dict:
        info = {"node": self.core.decision_node().copy()}
        if self.with_state:
            info["state"] = (self.core.count / self.net.storage).astype(np.float32)
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options={"scenario": s}`` switches to scenario ``s`` (same number of agents)."""
        super().reset(seed=seed)
        scenario = (options or {}).get("scenario")
        if scenario is not None and scenario != self.core.scenario:
            if scenario.city != self.city:
                self.net, self.city = load_city(scenario.city), scenario.city
            if self.backend != "core":
                self.core.close()
            self.core = self._core(scenario)
        return self._obs(self.core.reset()), self._info()

    def step(self, action: np.ndarray):
        if self.decisions_only:
            obs, (reward, _, _) = None, self.core.advance(np.asarray(action))
        else:
            obs, reward, _, _ = self.core.step(np.asarray(action))
        info = self._info()
        done = self.core.done
        if done:
            info["metrics"] = self.core.metrics()
            info["arrived"] = self.core.status == ARRIVED
        return self._obs(obs), reward, done, False, info


def check_backend(vector: str) -> None:
    """Fail early, with the install hint, if the vector-env backend cannot be used."""
    if vector not in VECTORS:
        raise VectorEnvError(f"unknown vector env '{vector}'; choose one of {', '.join(VECTORS)}")
    if vector == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise VectorEnvError("--vector ray needs Ray, which is not installed: "
                                 "pip install 'relied[ray]'") from None


LOOPBACK = "127.0.0.1"
#: Ray's switch of its single-machine mode (despite the name, read on every platform)
_RAY_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_ray(n_envs: int, **local) -> None:
    """Join the Ray cluster at ``$RAY_ADDRESS`` or, without one, start a local instance with
    ``n_envs`` CPUs bound to loopback (:func:`start_local_ray`, ``local``: more
    ``ray.init`` options); a running ``ray.init`` of the caller is kept."""
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        start_local_ray(max(n_envs, 1), **local)


def start_local_ray(num_cpus: int, **init) -> None:
    """Start a Ray instance on this machine, reachable on loopback only: node IP 127.0.0.1,
    every Ray server listening there, no dashboard; it ends with this process (or
    ``ray.shutdown()``).

    ``ray.init(_node_ip_address="127.0.0.1")`` is not enough on Linux: Ray replaces a loopback
    node IP by the machine's routable address and binds its gRPC servers to all interfaces,
    unless its single-machine mode (``ray_constants.ENABLE_RAY_CLUSTER`` off, the default on
    macOS/Windows, read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``) is on. It is switched on
    while the instance starts (the Ray processes inherit it) and the node IP checked after:
    :class:`VectorEnvError` if this Ray version ignores it."""
    import os

    import ray
    from ray._private import ray_constants

    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_RAY_SINGLE_NODE)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_RAY_SINGLE_NODE] = "0"
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address=LOOPBACK, log_to_driver=False, **init)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_RAY_SINGLE_NODE, None)
        else:
            os.environ[_RAY_SINGLE_NODE] = saved_env
    ip = ray.util.get_node_ip_address()
    if ip != LOOPBACK:
        ray.shutdown()
        raise VectorEnvError(f"the local Ray instance took node IP {ip}, not {LOOPBACK} (Ray "
                             f"{ray.__version__}); start Ray yourself and set RAY_ADDRESS")



def vector_env(fns: list, vector: str):
    """Tianshou's ``dummy``/``subproc``/``ray`` vector env over the env factories ``fns``
    (``ray``: :func:`start_ray` first)."""
    from tianshou.env import DummyVectorEnv, RayVectorEnv, SubprocVectorEnv

    check_backend(vector)
    if vector == "ray":
        start_ray(len(fns))
    kinds = dict(zip(VECTORS, (DummyVectorEnv, SubprocVectorEnv, RayVectorEnv), strict=True))
    return kinds[vector](fns)


def make_vector_env(scenario: Scenario, n_envs: int, vector: str, with_state: bool = False,
                    backend: str = "core", decisions_only: bool = False,
                    net: CityNetwork | None = None):
    """``n_envs`` copies of the training scenario behind one of Tianshou's vector envs
    (``backend`` sumo/sumo-meso: one SUMO per env worker, so several envs need subprocesses;
    ``decisions_only``, ``net``: see :class:`BatchRoutingEnv`)."""
    check_backend(vector)
    if backend != "core" and vector == "dummy" and n_envs > 1:
        raise VectorEnvError(f"--backend {backend} runs one SUMO per process (libsumo): use "
                             "--vector subproc (or ray) with --envs > 1, or --envs 1")
    return vector_env([functools.partial(BatchRoutingEnv, scenario, with_state, backend,
                                         decisions_only, net)
                       for _ in range(n_envs)], vector)
