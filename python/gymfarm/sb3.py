"""A Stable-Baselines3 ``VecEnv`` backed by a farm: a drop-in for ``SubprocVecEnv``.

    from gymfarm.sb3 import RemoteVecEnv
    venv = RemoteVecEnv("CartPole-v1", num_envs=8, endpoint="tcp://127.0.0.1:5555")
    model = PPO("MlpPolicy", venv)

Importable without SB3 installed (it then stands alone with the same methods); with SB3 it
subclasses SB3's ``VecEnv``. Semantics follow ``SubprocVecEnv``: an env whose episode ends is
reset at once, its last observation in ``info["terminal_observation"]`` and
``info["TimeLimit.truncated"]`` set when the episode was cut by a time limit. The reset happens
inside the worker. On the farm's host each env's step goes through its slab (docs/protocol.md
"Shared memory"), one request per env; elsewhere a step is one step_batch for all envs.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Union

import numpy as np
from gymnasium import spaces

from . import codec, errors
from .client import DEFAULT_ENDPOINT, connect
from .vector import close_slabs, make_many, tune_slabs

try:  # pragma: no cover - depends on the environment
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv as _VecEnvBase

    HAVE_SB3 = True
except ImportError:  # pragma: no cover
    _VecEnvBase = object
    HAVE_SB3 = False

Indices = Union[None, int, Iterable[int]]


def _stack(space: spaces.Space, items: list[Any]) -> Any:
    if isinstance(space, spaces.Dict):
        return OrderedDict((k, np.stack([o[k] for o in items])) for k in space.spaces)
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([o[i] for o in items]) for i in range(len(space.spaces)))
    return np.stack(items)


class RemoteVecEnv(_VecEnvBase):  # type: ignore[misc,valid-type]
    """``num_envs`` farm envs as one SB3 VecEnv."""

    def __init__(self, env_id: str, num_envs: int = 1, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0,
                 **make_kwargs: Any):
        self.farm = connect(endpoint, timeout=timeout)  # several farms (a list, a cluster): a ShardedFarm
        self.env_id = env_id
        try:
            # on the farm's host each env's steps go through its slab; elsewhere (and on several
            # farms) a step is one step_batch
            made, self._slabs = make_many(self.farm, env_id, num_envs, make_kwargs)
        except BaseException:
            self.farm.close()
            raise
        tune_slabs(self._slabs, num_envs)
        self.instance_ids = [r["instance_id"] for r in made]
        observation_space = codec.space_from_wire(made[0]["observation_space"])
        action_space = codec.space_from_wire(made[0]["action_space"])
        self._render_mode = made[0].get("render_mode")
        self._metadata = dict(made[0].get("metadata") or {})
        self._actions: list[Any] | None = None
        self._closed = False
        if HAVE_SB3:
            super().__init__(num_envs, observation_space, action_space)
        else:
            self.num_envs = num_envs
            self.observation_space = observation_space
            self.action_space = action_space
            self.reset_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
            self._seeds: list[int | None] = [None] * num_envs
            self._options: list[dict[str, Any]] = [{} for _ in range(num_envs)]
            self.render_mode = self._render_mode
            self.metadata = self._metadata

    # -- the VecEnv API -------------------------------------------------------------------------

    def reset(self) -> Any:
        requests = []
        for i, iid in enumerate(self.instance_ids):
            body: dict[str, Any] = {}
            if self._seeds[i] is not None:
                body["seed"] = int(self._seeds[i])
            if self._options[i]:
                body["options"] = self._options[i]
            requests.append(("reset", iid, body))
        results = self._checked(self.farm.call_many(requests))
        for r in results:
            codec.emit_warnings(r)
            codec.apply_tuples(r)
        self.reset_infos = [r["info"] for r in results]
        self._seeds = [None] * self.num_envs
        self._options = [{} for _ in range(self.num_envs)]
        return _stack(self.observation_space, [self._obs(r["obs"]) for r in results])

    def step_async(self, actions: np.ndarray) -> None:
        acts = list(actions)
        if len(acts) != self.num_envs:  # zip would silently drop envs (and obs would have the wrong shape)
            raise ValueError(f"got a batch of {len(acts)} actions for num_envs={self.num_envs}")
        self._actions = acts

    def step_wait(self) -> Any:
        if self._actions is None:
            raise RuntimeError("step_wait called without step_async")
        actions, self._actions = self._actions, None
        steps = list(zip(self.instance_ids, actions))
        if any(sh is not None for sh in self._slabs):
            results = self.farm.wait_slab_steps(self.farm.send_slab_steps(self._slabs, steps, autoreset="same_step"))
        else:
            results = self.farm.step_batch(steps, autoreset="same_step")
        results = self._checked(results)
        obs, rewards, dones, infos = [], [], [], []
        for i, r in enumerate(results):
            codec.emit_warnings(r)  # the env's warnings, raised here
            codec.apply_tuples(r)  # tuples in its infos stay tuples
            info = dict(r["final_info"] if "final_obs" in r else r["info"])
            done = bool(r["terminated"] or r["truncated"])
            info["TimeLimit.truncated"] = bool(r["truncated"] and not r["terminated"])
            if "final_obs" in r:
                info["terminal_observation"] = self._obs(r["final_obs"])
                self.reset_infos[i] = r["info"]
            obs.append(self._obs(r["obs"]))
            rewards.append(r["reward"])
            dones.append(done)
            infos.append(info)
        return _stack(self.observation_space, obs), np.stack(rewards), np.stack(dones), infos

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._seeds = [seed + idx for idx in range(self.num_envs)]
        return self._seeds

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        if options is None:
            options = {}
        self._options = list(options) if isinstance(options, list) else [dict(options)] * self.num_envs

    def get_attr(self, attr_name: str, indices: Indices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [self._render_mode for _ in self._indices(indices)]
        return self._each("get_attr", {"name": attr_name}, indices)

    def set_attr(self, attr_name: str, value: Any, indices: Indices = None) -> None:
        self._each("set_attr", {"name": attr_name, "value": value}, indices)

    def env_method(self, method_name: str, *method_args: Any, indices: Indices = None, **method_kwargs: Any
                   ) -> list[Any]:
        return self._each("call", {"name": method_name, "args": list(method_args), "kwargs": method_kwargs},
                          indices)

    def env_is_wrapped(self, wrapper_class: type, indices: Indices = None) -> list[bool]:
        """Remote envs are wrapped on the farm; local wrapper classes never wrap them."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self._render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        results = self._checked(self.farm.call_many([("render", iid, None) for iid in self.instance_ids]))
        return [r["frame"] for r in results]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_remote()

    # -- helpers -------------------------------------------------------------------------------

    def _obs(self, value: Any) -> Any:
        return codec.value_to_space(self.observation_space, value)

    def _indices(self, indices: Indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def _each(self, verb: str, body: dict[str, Any], indices: Indices) -> list[Any]:
        idx = self._indices(indices)
        results = self._checked(self.farm.call_many([(verb, self.instance_ids[i], body) for i in idx]), idx)
        return [r.get("value") for r in results]

    def _checked(self, results: list[Any], indices: list[int] | None = None) -> list[dict[str, Any]]:
        errors.raise_first(results, indices, self.instance_ids)
        return results

    def _close_remote(self) -> None:
        self.farm.close_many(self.instance_ids)
        close_slabs(self._slabs)
        self.farm.close()
