"""RemoteEnv: a real gymnasium.Env whose env lives in a gymfarm worker process."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.core import ActType, ObsType
from gymnasium.envs.registration import EnvSpec

from . import codec


def spec_from_wire(d: Any) -> EnvSpec | None:
    """The remote env's EnvSpec (id, entry point, max_episode_steps, kwargs, ...)."""
    if not isinstance(d, dict) or not isinstance(d.get("id"), str):
        return None
    fields = {k: d[k] for k in ("entry_point", "reward_threshold", "nondeterministic", "max_episode_steps",
                                "order_enforce", "disable_env_checker", "vector_entry_point")
              if d.get(k) is not None}
    try:
        return EnvSpec(id=d["id"], kwargs=dict(d.get("kwargs") or {}), **fields)
    except Exception:  # an id Gymnasium cannot parse: the id alone
        return None


def call_body(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The body of a ``call`` and the caller's arrays the method may fill in place: every writable
    ndarray argument (positional or keyword, not nested) is named in ``outs``, so the worker sends
    its contents after the call back (``ale.getScreenGrayscale(buf)`` fills ``buf``). A call without
    such arguments is the plain ``{name, args, kwargs}``."""
    body: dict[str, Any] = {"name": name, "args": list(args), "kwargs": kwargs}
    outs: list[int | str] = []
    arrays: list[np.ndarray] = []
    for key, value in [*enumerate(args), *kwargs.items()]:
        if isinstance(value, np.ndarray) and value.ndim > 0 and value.flags.writeable:
            outs.append(key)
            arrays.append(value)
    if outs:
        body["outs"] = outs
    return body, arrays


def copy_back(arrays: Sequence[np.ndarray], reply: dict[str, Any]) -> None:
    """Copies the worker's post-call contents of the caller's arrays into them (``np.copyto``).
    A reply whose arrays do not match the caller's in number, dtype or shape is refused."""
    if not arrays:
        return
    filled = reply.get("outs")
    if not isinstance(filled, list) or len(filled) != len(arrays):
        raise ValueError(f"the farm sent back {len(filled) if isinstance(filled, list) else 'no'} filled "
                         f"arrays for the {len(arrays)} writable array arguments of this call (an older worker?)")
    for i, (mine, theirs) in enumerate(zip(arrays, filled, strict=True)):
        same = isinstance(theirs, np.ndarray) and theirs.shape == mine.shape
        if not same or theirs.dtype != mine.dtype.newbyteorder("<"):
            got = f"{theirs.dtype} {theirs.shape}" if isinstance(theirs, np.ndarray) else type(theirs).__name__
            raise ValueError(f"array argument {i} came back as {got}, not {mine.dtype} {mine.shape}: not copied")
        np.copyto(mine, theirs)


class RemoteMethod:
    """A method of the remote env (or of one of its attributes): calling it is a ``call``. A
    writable ndarray argument the method fills in place is filled here too (see :func:`call_body`)."""

    def __init__(self, env: RemoteEnv, path: str):
        self._env, self._path = env, path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        body, arrays = call_body(self._path, args, kwargs)
        r = self._env._call("call", body)
        copy_back(arrays, r)
        return r["value"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._env._remote_attr(f"{self._path}.{name}")

    def __repr__(self) -> str:
        return f"<remote {self._path} of {self._env!r}>"


class RemoteObject(RemoteMethod):
    """An attribute of the remote env that cannot travel (an emulator handle, say): its attributes
    and methods are reached remotely (``env.unwrapped.ale.lives()``). The methods of its class,
    as the farm listed them, are called without asking what they are first (one round trip a
    call, not two)."""

    def __init__(self, env: RemoteEnv, path: str, text: str, methods: Any = None):
        super().__init__(env, path)
        self._text = text
        listed = methods if isinstance(methods, list) else []
        self._methods = frozenset(m for m in listed if isinstance(m, str))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            return RemoteMethod(self._env, f"{self._path}.{name}")
        return self._env._remote_attr(f"{self._path}.{name}")

    def __repr__(self) -> str:
        return f"<remote {self._path}: {self._text}>"


_RNG_STATE = "np_random.bit_generator.state"
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def generator_from_state(state: Any) -> np.random.Generator | None:
    """A NumPy Generator in ``state`` (a ``bit_generator.state`` dict), or None for a state that is
    not one of NumPy's bit generators'."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        return None
    try:
        bits = getattr(np.random, name)()
        bits.state = state
    except (TypeError, ValueError, KeyError):
        return None
    return np.random.Generator(bits)


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
        make = getattr(farm, "make_instance", None)  # a Farm; a sharded farm places the make itself
        body = {"env_id": env_id, "kwargs": kwargs, "aliases": False}
        reply, self._slab = make(body) if make else (farm.call("make", body=body), None)
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

    # -- np_random: the remote env's generator, as in-process ------------------------------------
    #
    # A wrapper that draws from env.unwrapped.np_random (AtariPreprocessing's no-op count,
    # StickyAction) draws from the env's own generator in-process. Here the first use fetches the
    # remote generator's state into the local generator (one round trip). From then on every
    # remote call of this env carries the generator along in the same round trip: what was drawn
    # here is sent ahead of the call (only when something was drawn), and the state after the
    # call is fetched behind it, both pipelined. Nothing is sent while np_random is not used.
    # ``_np_random`` itself stays local (reset(seed) seeds it as gymnasium.Env does; env_checker
    # reads it) and keeps its identity while it follows the remote one.

    @property
    def np_random(self) -> np.random.Generator:  # type: ignore[override]
        d = self.__dict__
        if d.get("_rng_lent") is None and d.get("_rng_remote", True) and not d.get("_closed", True):
            self._pull_rng()
        return gym.Env.np_random.fget(self)  # type: ignore[attr-defined]

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        gym.Env.np_random.fset(self, value)  # type: ignore[attr-defined]
        if self.__dict__.get("_rng_remote", True) and not self.__dict__.get("_closed", True):
            from .errors import EnvError

            try:  # now, so that a generator the remote env cannot take is refused here
                self.farm.call("set_attr", self.instance_id, {"name": _RNG_STATE, "value": value.bit_generator.state})
            except EnvError as e:
                raise ValueError(f"the remote env's generator cannot take this one's state: {e.remote_message}"
                                 ) from None
            self.__dict__["_rng_lent"] = value.bit_generator.state
            self.__dict__["_rng_set_here"] = True  # its seed is unknown: np_random_seed is -1

    @property
    def np_random_seed(self) -> int:  # type: ignore[override]
        """The remote env's ``np_random_seed`` (-1 once ``np_random`` was set here, as gymnasium.Env)."""
        d = self.__dict__
        if d.get("_closed", True) or not d.get("_rng_remote", True):
            return gym.Env.np_random_seed.fget(self)  # type: ignore[attr-defined]
        if d.get("_rng_set_here"):
            return -1
        return self._call("get_attr", {"name": "np_random_seed"})["value"]

    def _pull_rng(self) -> None:
        from .errors import BadRequest, EnvError

        try:
            state = self.farm.call("get_attr", self.instance_id, {"name": _RNG_STATE}).get("value")
        except (EnvError, BadRequest):  # no NumPy generator there: np_random stays this object's
            state = None
        if self._take_rng_state(state):
            self.__dict__["_rng_follow"] = True
        else:
            self.__dict__["_rng_remote"] = False

    def _take_rng_state(self, state: Any) -> bool:
        """The local generator, set to the remote one's ``state`` (the same object when it is of the
        same kind, so a reference a wrapper holds stays good). False for a state that is none."""
        gen = self.__dict__.get("_np_random")
        if (gen is not None and isinstance(state, dict)
                and state.get("bit_generator") == type(gen.bit_generator).__name__):
            try:
                gen.bit_generator.state = state
            except (TypeError, ValueError, KeyError):
                return False
        else:
            gen = generator_from_state(state)
            if gen is None:
                return False
            self._np_random = gen
        self.__dict__["_rng_lent"] = gen.bit_generator.state
        return True

    def _rng_to_send(self) -> Any:
        """The local generator's state when something was drawn from it since it was fetched."""
        lent, self.__dict__["_rng_lent"] = self.__dict__.get("_rng_lent"), None
        gen = self.__dict__.get("_np_random")
        if lent is None or gen is None:
            return None
        state = gen.bit_generator.state
        return None if state == lent else state

    def _call(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.__dict__
        if d.get("_rng_lent") is None and not d.get("_rng_follow", False):  # no generator to carry: each step
            send, follow = None, False
        else:
            send = self._rng_to_send()
            follow = d.get("_rng_follow", False) and verb != "close"
        if send is None and not follow:
            shared = self.__dict__.get("_slab")
            if shared is not None and verb in ("step", "reset"):
                r = self.farm.slab_call(shared, verb, self.instance_id, body or {})
            else:
                r = self.farm.call(verb, self.instance_id, body)
        else:
            r = self._call_with_rng(verb, body, send, follow)
        return self._finish(r)

    @staticmethod
    def _finish(r: dict[str, Any]) -> dict[str, Any]:
        """A result with its warnings emitted here and its tuples restored."""
        if "warnings" in r:
            codec.emit_warnings(r)
        if "tuples" in r:
            codec.apply_tuples(r)
        return r

    def _call_with_rng(self, verb: str, body: dict[str, Any] | None, send: Any, follow: bool) -> dict[str, Any]:
        """One round trip: [set the generator's state,] the call[, fetch the state after it]."""
        from .errors import EnvError, GymfarmError

        iid = self.instance_id
        requests = [("set_attr", iid, {"name": _RNG_STATE, "value": send})] if send is not None else []
        requests.append((verb, iid, body))
        if follow:
            requests.append(("get_attr", iid, {"name": _RNG_STATE}))
        results = self.farm.call_many(requests)
        if follow and isinstance(results[-1], dict):
            self._take_rng_state(results[-1].get("value"))
        if send is not None and isinstance(results[0], GymfarmError):
            err = results[0]
            if isinstance(err, EnvError):
                raise ValueError(f"the remote env's generator cannot take this one's state: {err.remote_message}")
            raise err
        r = results[1 if send is not None else 0]
        if isinstance(r, GymfarmError):
            raise r
        return r

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = int(seed)
            self.__dict__["_rng_lent"] = None  # the remote env is reseeded: nothing to send back
            self.__dict__["_rng_set_here"] = False
        if options is not None:
            body["options"] = options
        r = self._call("reset", body)
        return codec.value_to_space(self.observation_space, r["obs"]), r["info"]

    def step(self, action: ActType) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        d = self.__dict__
        shared = d.get("_slab")
        if shared is not None and d.get("_rng_lent") is None and not d.get("_rng_follow", False):
            r = self.farm.slab_step(shared, self.instance_id, action)  # _call's slab path, quicker
            if r.__class__ is tuple:  # a raw reply: no warnings, no tuples (shm/slab.hpp)
                return (codec.value_to_space(self.observation_space, r[0]), r[1], r[2], r[3], r[4])
            r = self._finish(r)
        else:
            r = self._call("step", {"action": action})
        return (codec.value_to_space(self.observation_space, r["obs"]), r["reward"], r["terminated"],
                r["truncated"], r["info"])

    def render(self) -> Any:
        return self._call("render")["frame"]

    @property
    def _frameskip(self) -> Any:
        """The remote env's own ``_frameskip`` (ALE envs): gymnasium's AtariPreprocessing reads
        ``env.unwrapped._frameskip`` before it skips frames. AttributeError when the env has none."""
        from .errors import EnvError

        if self.__dict__.get("_closed", True):
            raise AttributeError("_frameskip")
        try:
            return self._call("get_attr", {"name": "_frameskip"})["value"]
        except EnvError as e:
            if e.remote_type == "AttributeError":
                raise AttributeError(e.remote_message) from None
            raise

    def sample(self, space: str = "action") -> Any:
        """Samples the remote env's own space (its RNG, not this process's)."""
        return self._call("sample", {"space": space})["value"]

    # -- the remote env's attributes and methods -----------------------------------------------

    def _remote_attr(self, path: str) -> Any:
        r = self._call("get_attr", {"name": path})
        if r.get("callable"):
            return RemoteMethod(self, path)
        if "object" in r:
            return RemoteObject(self, path, str(r.get("value")), r.get("methods"))
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
        self.__dict__["_rng_lent"] = None  # the env goes: what was drawn from its generator goes with it
        try:
            self._call("close")
        except Exception:  # the instance may already be gone (crash, farm stopped)
            pass
        shared, self.__dict__["_slab"] = self.__dict__.get("_slab"), None
        if shared is not None:
            shared.close()
        if self.owns_farm:
            self.farm.close()

    def __repr__(self) -> str:
        return f"<RemoteEnv {self.env_id} {getattr(self, 'instance_id', '?')} at {self.farm.endpoint}>"
