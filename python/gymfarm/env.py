"""RemoteEnv: a real gymnasium.Env whose env lives in a gymfarm worker process."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.core import ActType, ObsType
from gymnasium.envs.registration import EnvSpec

from . import codec


def spec_from_wire(d: Any) -> EnvSpec | None:
    """The remote env's EnvSpec (id, entry point, max_episode_steps, kwargs, ...)."""
    if not isinstance(d, dict) or not isinstance(d.get("id"), str):
        return None
    fields = {k: d[k] for k in ("entry_point", "reward_threshold", "nondeterministic", "max_episode_steps",
                                "order_enforce", "disable_env_checker") if d.get(k) is not None}
    try:
        return EnvSpec(id=d["id"], kwargs=dict(d.get("kwargs") or {}), **fields)
    except Exception:  # an id Gymnasium cannot parse: the id alone
        return None


class RemoteMethod:
    """A method of the remote env (or of one of its attributes): calling it is a ``call``."""

    def __init__(self, env: RemoteEnv, path: str):
        self._env, self._path = env, path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._env._call("call", {"name": self._path, "args": list(args), "kwargs": kwargs})["value"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._env._remote_attr(f"{self._path}.{name}")

    def __repr__(self) -> str:
        return f"<remote {self._path} of {self._env!r}>"


class RemoteObject(RemoteMethod):
    """An attribute of the remote env that cannot travel (an emulator handle, say): its attributes
    and methods are reached remotely (``env.unwrapped.ale.lives()``)."""

    def __init__(self, env: RemoteEnv, path: str, text: str):
        super().__init__(env, path)
        self._text = text

    def __repr__(self) -> str:
        return f"<remote {self._path}: {self._text}>"


class RemoteEnv(gym.Env):
    """A Gymnasium env served by a farm. Made with :meth:`gymfarm.Farm.make`.

    Spaces are rebuilt locally and equal the env's own; observations arrive as numpy arrays of
    the env's dtype and shape. ``spec`` is the remote env's spec; attributes and methods this
    class does not have are the remote env's (``env.get_action_meanings()``,
    ``env.get_wrapper_attr("frameskip")``). Warnings the env raises are raised here. Errors raise
    :mod:`gymfarm.errors` exceptions.
    """

    def __init__(self, farm: Any, env_id: str, **kwargs: Any):
        self.farm = farm
        self.env_id = env_id
        self._closed = True  # until made: nothing to close
        reply = farm.call("make", body={"env_id": env_id, "kwargs": kwargs, "aliases": False})
        codec.emit_warnings(reply)
        self.instance_id: str = reply["instance_id"]
        self.observation_space = codec.space_from_wire(reply["observation_space"])
        self.action_space = codec.space_from_wire(reply["action_space"])
        self.render_mode = reply.get("render_mode")
        self.metadata = dict(reply.get("metadata") or {})
        self.remote_spec: dict[str, Any] = dict(reply.get("spec") or {})
        self._spec = spec_from_wire(self.remote_spec)
        self.local_spec: EnvSpec | None = None  # the spec gymnasium.make gave (a gymfarm/ id)
        self.owns_farm = False  # close the connection with the env (set by gymnasium.make entry points)
        self._closed = False

    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        remote = self.__dict__.get("_spec")
        return remote if remote is not None else self.__dict__.get("local_spec")

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:  # gymnasium.make sets the local (gymfarm/) spec
        self.__dict__["local_spec"] = value

    def _call(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.farm.call(verb, self.instance_id, body)
        if "warnings" in r:
            codec.emit_warnings(r)
        if "tuples" in r:
            codec.apply_tuples(r)
        return r

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = int(seed)
        if options is not None:
            body["options"] = options
        r = self._call("reset", body)
        return codec.value_to_space(self.observation_space, r["obs"]), r["info"]

    def step(self, action: ActType) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        r = self._call("step", {"action": codec.wire_action(self.action_space, action)})
        return (codec.value_to_space(self.observation_space, r["obs"]), r["reward"], r["terminated"],
                r["truncated"], r["info"])

    def render(self) -> Any:
        return self._call("render")["frame"]

    def sample(self, space: str = "action") -> Any:
        """Samples the remote env's own space (its RNG, not this process's)."""
        return self._call("sample", {"space": space})["value"]

    # -- the remote env's attributes and methods -----------------------------------------------

    def _remote_attr(self, path: str) -> Any:
        r = self._call("get_attr", {"name": path})
        if r.get("callable"):
            return RemoteMethod(self, path)
        if "object" in r:
            return RemoteObject(self, path, str(r.get("value")))
        return r["value"]

    def __getattr__(self, name: str) -> Any:
        # only for names this object lacks; private names (copy, pickle probes) stay local
        if name.startswith("_") or "instance_id" not in self.__dict__ or self.__dict__.get("_closed", True):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        from .errors import EnvError

        try:
            return self._remote_attr(name)
        except EnvError as e:
            if e.remote_type == "AttributeError":
                raise AttributeError(e.remote_message) from None
            raise

    def has_wrapper_attr(self, name: str) -> bool:
        try:
            self.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def get_wrapper_attr(self, name: str) -> Any:
        """This object's attribute when it has one (spaces, spec, np_random), else the remote env's
        (through its wrappers, as ``gymnasium.Env.get_wrapper_attr`` there)."""
        if name in self.__dict__ or hasattr(type(self), name):
            return getattr(self, name)
        if self._closed:
            raise AttributeError(f"{type(self).__name__} is closed: no attribute {name!r}")
        from .errors import EnvError

        try:  # a private name goes too: the farm refuses it (BadRequest), as it refuses get_attr
            return self._remote_attr(name)
        except EnvError as e:
            if e.remote_type == "AttributeError":
                raise AttributeError(e.remote_message) from None
            raise

    def set_wrapper_attr(self, name: str, value: Any, *, force: bool = True) -> bool:
        """Sets the attribute on the remote env (this object's own attributes stay local). With
        ``force=False`` only an attribute the env has is set, as ``gymnasium.Env`` does."""
        if name in self.__dict__ or hasattr(type(self), name):
            setattr(self, name, value)
            return True
        if not force and not self.has_wrapper_attr(name):
            return False
        self._call("set_attr", {"name": name, "value": value})
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call("close")
        except Exception:  # the instance may already be gone (crash, farm stopped)
            pass
        if self.owns_farm:
            self.farm.close()

    def __repr__(self) -> str:
        return f"<RemoteEnv {self.env_id} {getattr(self, 'instance_id', '?')} at {self.farm.endpoint}>"
