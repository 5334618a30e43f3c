# The env host that runs inside every gymfarm-worker (embedded at build time).
# It holds the worker's Gymnasium envs by instance id (one, or up to K with --envs-per-worker K)
# and turns protocol requests into env calls. Results are
# plain Python objects plus numpy arrays; the C++ side packs them straight from their buffers.
import faulthandler
import importlib
import inspect
import json
import os
import sys
import traceback
import types
import warnings

# pygame-ce (what Gymnasium 1.3+ renders classic-control, toy-text and Box2D envs with) installs
# its "parachute" on SIGSEGV, SIGBUS and SIGFPE the first time an env renders, and the parachute
# abort()s: an env's segfault would reach the client as SIGABRT. It only takes signals nobody
# handles, so faulthandler takes them first: it writes the Python stack of a fatal signal to the
# worker's stderr (the farm's log), and the worker then dies of the signal itself.
faulthandler.enable()

# Workers have no display: MuJoCo envs render through EGL (Mesa's software renderer, or a GPU's)
# unless the operator chose another backend (MUJOCO_GL=osmesa, glfw; empty counts as unset, as
# mujoco reads it). Set before anything imports mujoco, which reads it once; in the zygote, so
# every forked worker inherits it.
if not os.environ.get("MUJOCO_GL"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402


def _register_ale():
    """Registers the Atari envs (ALE/Pong-v5, Pong-v0, Breakout-v0, ...) when ale-py is installed,
    as ``gymnasium.register_envs(ale_py)`` does in-process; GYMFARM_ALE=0 leaves them out. Runs
    at start (in the zygote, before the fork), before the host's warning capture below, so what
    the import warns goes to the log and not to the first client. A broken ale-py costs the Atari
    ids, not the worker."""
    if os.environ.get("GYMFARM_ALE", "1") == "0":
        return None
    try:
        import ale_py
    except ImportError:
        return None
    except Exception as e:  # a broken install (a missing shared library): log it, serve the rest
        print(f"[gymfarm-worker] ale_py does not import, Atari envs left out: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
        return None
    gym.register_envs(ale_py)
    return ale_py.__version__


ALE_VERSION = _register_ale()  # None when the Atari envs are not registered


class BadAction(Exception):
    """The action cannot be decoded at all (protocol code bad_action). An action that decodes but
    lies outside the space goes to the env, as in-process; what the env raises is an env_error."""


class BadRequest(Exception):
    """The request itself is wrong: unknown env id, missing env (protocol code bad_request).
    ``kind`` says more to the dialects: "not_found", "malformed", "params" or "".
    """

    def __init__(self, message, kind="", gymnasium_error=""):
        super().__init__(message)
        self.kind = kind
        self.gymnasium_error = gymnasium_error  # the gymnasium.error class an in-process make raises


# Legacy ids that clients of the older servers still use, resolved when not registered (through
# the chain: Taxi-v2 is Taxi-v3 where that is registered, as in Gymnasium 1.2, else Taxi-v4; in
# Gymnasium 1.3+ only Taxi-v4 is, with the same transitions as v3 for the default kwargs).
ALIASES = {
    "FrozenLake-v0": "FrozenLake-v1", "FrozenLake8x8-v0": "FrozenLake8x8-v1", "Taxi-v2": "Taxi-v3",
    "Taxi-v3": "Taxi-v4",
    "Blackjack-v0": "Blackjack-v1", "CliffWalking-v0": "CliffWalking-v1", "Pendulum-v0": "Pendulum-v1",
    "LunarLander-v2": "LunarLander-v3", "LunarLanderContinuous-v2": "LunarLanderContinuous-v3",
    "BipedalWalker-v2": "BipedalWalker-v3", "BipedalWalkerHardcore-v2": "BipedalWalkerHardcore-v3",
    "CarRacing-v0": "CarRacing-v3", "MountainCar-v1": "MountainCar-v0",
}

# Operator hooks (gymfarm start --import MODULE): a module may define get_env(env_id, seed=None, **kw)
# to build envs its own way, and process_step(step) to shape Gymie step replies.
_hooks = {}


class _Hosted:
    __slots__ = ("env", "needs_reset")

    def __init__(self, env):
        self.env = env
        self.needs_reset = False  # the last step ended an episode (for autoreset "next_step")


_envs = {}  # instance id -> _Hosted


def import_modules(names):
    for name in names:
        module = importlib.import_module(name)
        for hook in ("get_env", "process_step"):
            if callable(getattr(module, hook, None)):
                _hooks[hook] = getattr(module, hook)


def after_fork():
    """In a worker forked from the zygote: its own random state (``random`` reseeds itself)."""
    np.random.seed()


def resolve_id(env_id):
    for _ in range(len(ALIASES)):  # bounded: the table has no cycles, but never loop on one
        if env_id in gym.registry or env_id not in ALIASES:
            break
        env_id = ALIASES[env_id]
    return env_id


def env_ids():
    return sorted(str(k) for k in gym.registry.keys())


def _array(a):
    return np.ascontiguousarray(a)


def describe_space(s):
    if isinstance(s, spaces.Box):
        return {"type": "Box", "dtype": s.dtype.name, "shape": list(s.shape),
                "low": _array(s.low), "high": _array(s.high)}
    if isinstance(s, spaces.Discrete):
        return {"type": "Discrete", "n": int(s.n), "start": int(s.start)}
    if isinstance(s, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": _array(s.nvec), "start": _array(s.start),
                "dtype": s.dtype.name}
    if isinstance(s, spaces.MultiBinary):
        n = s.n
        return {"type": "MultiBinary", "n": int(n) if np.isscalar(n) else [int(x) for x in n]}
    if isinstance(s, spaces.Tuple):
        return {"type": "Tuple", "spaces": [describe_space(x) for x in s.spaces]}
    if isinstance(s, spaces.Dict):
        return {"type": "Dict", "keys": list(s.spaces.keys()),
                "spaces": [describe_space(x) for x in s.spaces.values()]}
    if isinstance(s, spaces.Text):
        return {"type": "Text", "max_length": int(s.max_length), "min_length": int(s.min_length),
                "charset": "".join(sorted(s.character_set))}
    if isinstance(s, spaces.Sequence):
        return {"type": "Sequence", "space": describe_space(s.feature_space), "stack": bool(s.stack)}
    if isinstance(s, spaces.Graph):
        return {"type": "Graph", "node_space": describe_space(s.node_space),
                "edge_space": describe_space(s.edge_space) if s.edge_space is not None else None}
    if isinstance(s, spaces.OneOf):
        return {"type": "OneOf", "spaces": [describe_space(x) for x in s.spaces]}
    return {"type": "Unsupported", "repr": repr(s)}


def as_in_process(space, value):
    """The decoded action as an in-process call would have it. Only the containers the wire cannot
    carry are rebuilt (a Tuple's list becomes a tuple, recursively); numbers, arrays and their
    dtypes, and values outside the space reach ``env.step`` unchanged: the env decides."""
    if isinstance(space, spaces.Tuple):
        if isinstance(value, list):
            if len(value) != len(space.spaces):
                return tuple(value)
            return tuple(as_in_process(s, v) for s, v in zip(space.spaces, value, strict=False))
        return value
    if isinstance(space, spaces.Dict):
        if isinstance(value, dict):
            return {k: as_in_process(space.spaces[k], v) if k in space.spaces else v for k, v in value.items()}
        return value
    if isinstance(space, spaces.Sequence):  # a sample is a tuple of elements (or one stacked array)
        if isinstance(value, list) and not space.stack:
            return tuple(as_in_process(space.feature_space, v) for v in value)
        return value
    if isinstance(space, spaces.Graph):  # GraphInstance(nodes, edges, edge_links) travels as an array
        if isinstance(value, list) and len(value) == 3:
            return spaces.GraphInstance(*value)
        return value
    if isinstance(space, spaces.OneOf):  # (index, value of that subspace)
        if isinstance(value, list) and len(value) == 2:
            i = value[0]
            sub = space.spaces[i] if isinstance(i, int) and 0 <= i < len(space.spaces) else None
            return (i, as_in_process(sub, value[1]) if sub is not None else value[1])
        return value
    return value


def _metadata(md):
    out = {}
    for k, v in dict(md or {}).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[str(k)] = list(v)
    return out


def _hosted(inst):
    h = _envs.get(inst)
    if h is None:
        raise BadRequest(f"this worker holds no env {inst!r}")
    return h


def _need_env(inst):
    return _hosted(inst).env


def _construct(env_id, kwargs, strict, aliases=True):
    """Builds the env with the operator's get_env hook, else gym.make. ``strict`` (the Gymie
    dialect) allows only the parameters the hook's signature names (none without a hook)."""
    get_env = _hooks.get("get_env")
    if get_env is not None:
        if strict:
            try:
                inspect.signature(get_env).bind(env_id, **kwargs)
            except TypeError as e:
                raise BadRequest(f"parameters do not fit get_env: {e}", "params") from None
        return get_env(env_id, **kwargs)
    if strict and kwargs:
        raise BadRequest(f"unexpected make parameters {sorted(kwargs)}", "params")
    kwargs = dict(kwargs)
    autoreset = kwargs.pop("autoreset", None)  # removed from gym.make in Gymnasium 1.0: a wrapper now
    env = gym.make(resolve_id(env_id) if aliases else env_id, **kwargs)
    return gym.wrappers.Autoreset(env) if autoreset else env


_RENDER_MODES = (None, "rgb_array", "ansi")


def _looks_like_path(v):
    """True for a str, bytes, bytearray or os.PathLike value that names a file: it has a separator
    or starts with '~'. Bytes are read as the OS would (os.fsdecode), so they get the same check."""
    if isinstance(v, os.PathLike):
        return True  # a path object is a path whatever it spells
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode("utf-8", "surrogateescape")
    if not isinstance(v, str):
        return False
    return "/" in v or "\\" in v or v.startswith("~")


def _check_kwargs(kwargs):
    """The make-kwargs allow-list: no windows on the farm, no paths chosen by clients. Every value,
    at any depth (lists, tuples, sets, dict keys and values), goes through the same path check."""
    mode = kwargs.get("render_mode")
    if mode not in _RENDER_MODES:
        raise BadRequest(f"render_mode {mode!r} is not allowed; use 'rgb_array' or 'ansi'", "params")

    stack = [(k, v) for k, v in kwargs.items()]
    while stack:  # iterative: nesting cannot exhaust the C stack or raise RecursionError
        key, v = stack.pop()
        if _looks_like_path(v):
            raise BadRequest(f"make parameter {key!r} looks like a path ({v!r}); paths are chosen by the operator",
                             "params")
        if isinstance(v, dict):
            for k, x in v.items():
                stack.append((key, k))
                stack.append((key, x))
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend((key, x) for x in v)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "OSUV":
            stack.extend((key, x) for x in v.ravel().tolist())


def _check_id_form(env_id):
    if not isinstance(env_id, str) or ":" in env_id:
        raise BadRequest(f"bad env id {env_id!r}: custom env packages are loaded by the operator "
                         "(gymfarm start --import MODULE), not named by clients", "malformed")


def _id_errors_as_bad_request(f, *args):
    """Runs f; Gymnasium's errors about the env id (unknown, deprecated, malformed) become the
    BadRequest a make answers, with the kind the dialects map."""
    try:
        return f(*args)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound) as e:
        raise BadRequest(str(e), "not_found", type(e).__name__) from None
    except (gym.error.UnregisteredEnv, gym.error.DeprecatedEnv) as e:
        raise BadRequest(str(e), "malformed", type(e).__name__) from None
    except gym.error.Error as e:
        if "Malformed environment ID" in str(e):
            raise BadRequest(str(e), "malformed", type(e).__name__) from None
        raise


def check_env_id(env_id, aliases=True, strict_kwargs=False):
    """What a make of env_id would refuse before building anything (the zygote answers this for a
    make that finds the pool at --max-workers): None when the id resolves, or when an operator's
    get_env hook decides what ids and parameters mean; else (message, kind, gymnasium error) as
    that make's BadRequest. ``strict_kwargs``: a Gymie make with parameters besides env_id and seed,
    which _construct refuses without a hook (Gymie checks parameters first)."""
    try:
        _check_id_form(env_id)
        if _hooks.get("get_env") is None:
            if strict_kwargs:
                raise BadRequest("unexpected make parameters", "params")
            _id_errors_as_bad_request(gym.spec, resolve_id(env_id) if aliases else env_id)
    except BadRequest as e:
        return (str(e), e.kind, e.gymnasium_error)
    except Exception:  # anything else is make's to report, with the env's own traceback
        return None
    return None


def make(inst, env_id, kwargs, strict=False, aliases=None):
    """``aliases`` false (the Python client): a legacy id raises DeprecatedEnv as gym.make does,
    instead of being resolved through ALIASES (which the dialects' older clients rely on)."""
    _check_id_form(env_id)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise BadRequest("make kwargs must be a map", "params")
    _check_kwargs(kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = _id_errors_as_bad_request(_construct, env_id, kwargs, bool(strict), aliases is not False)
    _envs[inst] = _Hosted(env)
    out = {
        "env_id": env_id,
        "observation_space": describe_space(env.observation_space),
        "action_space": describe_space(env.action_space),
        "render_mode": env.render_mode,
        "metadata": _metadata(env.metadata),
        "spec": _spec(env.spec, env_id),
    }
    _add_warnings(out, caught)
    return out


def _spec(spec, env_id):
    """The env's EnvSpec as plain values: what gymnasium.envs.registration.EnvSpec takes, with the
    kwargs that can travel (others as their repr) and the entry point when it is a string."""
    if spec is None:
        return {"id": env_id, "max_episode_steps": None, "reward_threshold": None}
    kwargs = {str(k): (v if _plain(v) else repr(v)) for k, v in dict(spec.kwargs or {}).items()}
    return {
        "id": spec.id, "max_episode_steps": spec.max_episode_steps, "reward_threshold": spec.reward_threshold,
        "entry_point": _entry_point(spec.entry_point),
        "nondeterministic": bool(spec.nondeterministic), "order_enforce": bool(spec.order_enforce),
        "disable_env_checker": bool(spec.disable_env_checker), "kwargs": kwargs,
        "vector_entry_point": _entry_point(getattr(spec, "vector_entry_point", None)),
    }


def _entry_point(ep):
    """A spec's entry point as the "module:name" string EnvSpec takes (a class or function registered
    directly is named by where it lives); None when it has no importable name."""
    if isinstance(ep, str):
        return ep
    module, name = getattr(ep, "__module__", None), getattr(ep, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str) and "<" not in name:
        return f"{module}:{name}"
    return None


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)


def _plain(v, depth=0):
    """True for a value the wire carries as itself (not as a repr): None, numbers, str, bytes,
    numeric numpy values, and lists, tuples and dicts (keys of those scalar types) of them."""
    if depth > 32:
        return False
    if isinstance(v, _PLAIN_SCALARS):
        return True
    if isinstance(v, (np.ndarray, np.generic)):
        return v.dtype.kind in "biuf"
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        # keys travel as str (the packer writes str(k) for a non-str key), as they always have
        return all(isinstance(k, _PLAIN_SCALARS) and _plain(x, depth + 1) for k, x in v.items())
    return False


# -- warnings: what the env warns in the worker is re-raised in the client (docs/protocol.md) ----

_MAX_WARNINGS = 16
_warned = []  # warnings shown in the worker since the last reply (warnings.showwarning below)


def _show(message, category, filename, lineno, file=None, line=None):
    if len(_warned) < _MAX_WARNINGS:
        _warned.append((message, category, filename, lineno))


warnings.showwarning = _show
warnings.simplefilter("always")  # every warning reaches the client, whose own filters decide


def _wire_warning(message, category, filename, lineno):
    text = str(message)[:4096]
    return {"category": category.__name__, "module": getattr(category, "__module__", ""), "message": text,
            "filename": str(filename), "lineno": int(lineno or 0)}


def _add_warnings(out, caught=None):
    """Moves the warnings of this request into the reply (``warnings``: [{category, module,
    message, filename, lineno}])."""
    found = [_wire_warning(w.message, w.category, w.filename, w.lineno) for w in (caught or [])[:_MAX_WARNINGS]]
    if _warned:
        found.extend(_wire_warning(*w) for w in _warned)
        _warned.clear()
    if found:
        out["warnings"] = found
    return out


def tuple_paths(value, depth=0, path=()):
    """Where ``value`` holds tuples (which the wire carries as arrays): a list of key/index paths,
    outermost first, so the client can turn those arrays back into tuples. [] when none."""
    if depth > 32:
        return []
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list, tuple)):
                found.extend(tuple_paths(v, depth + 1, path + (str(k) if not isinstance(k, str) else k,)))
    elif isinstance(value, (list, tuple)):
        if isinstance(value, tuple):
            found.append(list(path))
        for i, v in enumerate(value):
            if isinstance(v, (dict, list, tuple)):
                found.extend(tuple_paths(v, depth + 1, path + (i,)))
    return found


def _mark_tuples(out, keys=("info", "final_info")):
    """Adds ``tuples``: {key: paths} for the reply's infos that hold tuples."""
    marks = {}
    for k in keys:
        v = out.get(k)
        if isinstance(v, (dict, list, tuple)) and v:
            paths = tuple_paths(v)
            if paths:
                marks[k] = paths
    if marks:
        out["tuples"] = marks
    return out


def reset(inst, seed=None, options=None):
    h = _hosted(inst)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed must be an integer or nil")
    obs, info = h.env.reset(seed=seed, options=options)
    h.needs_reset = False
    return _add_warnings(_mark_tuples({"obs": obs, "info": info}))


def step(inst, action, autoreset=None, processed=False):
    """One step. ``autoreset`` follows Gymnasium's vector autoreset modes:
    "next_step": a step after an episode ended resets instead (action ignored, reward 0);
    "same_step": an episode that ends is reset at once, its last obs/info in final_obs/final_info."""
    h = _hosted(inst)
    env = h.env
    if autoreset not in (None, "next_step", "same_step"):
        raise BadRequest("autoreset must be 'next_step', 'same_step' or nil")
    if autoreset == "next_step" and h.needs_reset:
        obs, info = env.reset()
        h.needs_reset = False
        return _add_warnings(_mark_tuples({"obs": obs, "reward": 0.0, "terminated": False, "truncated": False,
                                           "info": info}))
    return finish_step(h, env.step(as_in_process(env.action_space, action)), autoreset, processed)


# The action spaces whose actions as_in_process rebuilds; for all others it passes them unchanged.
CONVERTED_SPACES = (spaces.Tuple, spaces.Dict, spaces.Sequence, spaces.Graph, spaces.OneOf)


def finish_step(h, result, autoreset=None, processed=False):
    """The reply to a step of ``h`` whose ``env.step`` returned ``result``. The worker's C++ step
    (worker/host.cpp) calls ``env.step`` itself and writes the common reply without Python; it
    comes here for the rest (an ended same_step episode, warnings, infos holding tuples, a
    result that is not a 5-tuple, a Gymie reply shaped by the operator's hook)."""
    env = h.env
    obs, reward, terminated, truncated, info = result
    out = {"obs": obs, "reward": reward, "terminated": bool(terminated),
           "truncated": bool(truncated), "info": info}
    h.needs_reset = bool(terminated or truncated)
    if processed and "process_step" in _hooks:  # the Gymie reply shaped by the operator's hook
        out["processed"] = _hooks["process_step"]((obs, reward, h.needs_reset, info))
    if autoreset == "same_step" and h.needs_reset:
        out["final_obs"], out["final_info"] = obs, info
        out["obs"], out["info"] = env.reset()
        h.needs_reset = False
    if _warned:
        _add_warnings(out)
    if out["info"] or out.get("final_info"):
        _mark_tuples(out)
    return out


MEMORY_LIMIT = 0  # bytes of --worker-memory-limit (set by the worker), for the resource_limit error


def error_map(e, tb=None):
    """The protocol error for an exception at the env boundary: {code, message, details}. ``tb``:
    its traceback when the exception object does not carry it (an error fetched in C++)."""
    if isinstance(e, BadAction):
        return {"code": "bad_action", "message": str(e), "details": {}}
    if MEMORY_LIMIT and isinstance(e, MemoryError):
        return {"code": "resource_limit",
                "message": f"MemoryError: the env went past --worker-memory-limit ({MEMORY_LIMIT >> 20} MB)",
                "details": {"limit": "--worker-memory-limit", "bytes": MEMORY_LIMIT}}
    if isinstance(e, BadRequest):
        details = {"kind": e.kind}
        if e.gymnasium_error:
            details["gymnasium_error"] = e.gymnasium_error
        return {"code": "bad_request", "message": str(e), "details": details}
    kind, message = type(e).__name__, str(e)
    try:
        text = "".join(traceback.format_exception(type(e), e, tb if tb is not None else e.__traceback__))
    except Exception:
        text = ""
    return {"code": "env_error", "message": f"{kind}: {message}",
            "details": {"type": kind, "message": message, "traceback": text}}


# Set by the worker: packs a value as a reply would and raises what packing would raise (an int
# beyond what ext type 2 carries, a str that is not UTF-8, nesting past the limit).
encode_check = None


def _check_encodable(r):
    if encode_check is not None:
        encode_check([r["info"], r.get("final_info"), r.get("final_obs")])


def step_vec(insts, actions, autoreset=None):
    """The steps of one batch for this worker's envs, answered stacked: obs (an array, one row per
    env), rewards, terminated and truncated (lists), the infos, the ended episodes' final obs/info
    (``finals``: [row, obs, info]) and the envs that failed (``errors``: [row, error map])."""
    n = len(insts)
    obs, infos, finals, errs, marks, warned = [None] * n, [{}] * n, [], [], [], []
    rewards, terminated, truncated = [0.0] * n, [False] * n, [False] * n  # plain lists: cheap to decode
    for i, inst in enumerate(insts):
        try:
            r = step(inst, actions[i], autoreset)
            reward = float(r["reward"])
            _check_encodable(r)  # a value the wire cannot carry fails this env's row, not the batch
        except Exception as e:  # reported for this env only; the others' results stand
            errs.append([i, error_map(e)])
            continue
        obs[i], rewards[i], terminated[i], truncated[i], infos[i] = (
            r["obs"], reward, r["terminated"], r["truncated"], r["info"])
        if "final_obs" in r:
            finals.append([i, r["final_obs"], r["final_info"]])
        if "tuples" in r:
            marks.append([i, r["tuples"]])
        if "warnings" in r:
            warned.extend(r["warnings"])
    good = next((o for o in obs if o is not None), None)
    if good is not None:
        fill = np.zeros_like(np.asarray(good))
        obs = np.stack([np.asarray(o) if o is not None else fill for o in obs])
    out = {"obs": obs if good is not None else None, "rewards": rewards, "terminated": terminated,
           "truncated": truncated, "infos": infos, "finals": finals, "errors": errs}
    if marks:
        out["tuples"] = marks  # [row, {info|final_info: paths}]
    _add_warnings(out)
    if warned:
        out["warnings"] = warned + out.get("warnings", [])
    return out


# Env methods that take an attribute name, and where: (position in args, keyword). A call to one
# of them passes its name argument through _attr_name like a get_attr of that name.
_NAME_TAKING = {
    "get_wrapper_attr": (0, "name"), "set_wrapper_attr": (0, "name"), "has_wrapper_attr": (0, "name"),
    "get_attr": (0, "name"), "set_attr": (0, "name"), "call": (0, "name"),
}


def _attr_name(name):
    """The private-attribute rule, in one place: every attribute name a client gives (get_attr,
    set_attr, call, and the name arguments of the methods in _NAME_TAKING) is a non-empty str
    that does not start with '_'."""
    if not isinstance(name, str) or not name or name.startswith("_"):
        raise BadRequest(f"attribute name {name!r} must be a non-empty string not starting with '_'")
    return name


def _attr_path(name):
    """A name, or a dotted path ("ale.lives"), each part under the private-attribute rule."""
    name = _attr_name(name)
    parts = name.split(".")
    for part in parts:
        _attr_name(part)
    return parts


def _lookup(env, parts):
    """Follows a dotted path from the env. A path goes through plain objects only (an emulator
    handle, a sub-object of the env): not through a module, a class, a function or method, or an
    env spec (whose make() would build an env past the make-kwargs allow-list)."""
    obj = env.get_wrapper_attr(parts[0])
    for i, part in enumerate(parts[1:], 1):
        _passable(obj, parts, i)
        obj = getattr(obj, part)
    return obj


def _passable(obj, parts, i):
    if isinstance(obj, (types.ModuleType, type, gym.envs.registration.EnvSpec,
                        gym.envs.registration.WrapperSpec)) or callable(obj):
        raise BadRequest(f"attribute path {'.'.join(parts)!r} goes through {'.'.join(parts[:i])!r}, "
                         f"a {type(obj).__name__}; paths go through plain objects only")


def _describe_attr(value):
    """A get_attr answer: the value itself when it travels as itself; otherwise what it is, so the
    client can offer a proxy: {"callable": true} for a method, {"object": repr} for an object."""
    if callable(value) and not isinstance(value, (type, np.ndarray, np.generic)):
        return {"value": None, "callable": True}
    if _plain(value):
        return {"value": value}
    out = {"value": repr(value), "object": type(value).__name__}
    methods = _method_names(value)
    if methods:
        out["methods"] = methods
    return out


_MAX_METHODS = 512
_methods_of_class = {}  # class -> its public method names (a class's methods rarely change)


def _method_names(obj):
    """The public methods of an object's class (ale-py's ALEInterface: lives, getScreenRGB, ...), read
    from the class without calling or reading anything on the object (no property runs), less the
    names its instance dict shadows; at most _MAX_METHODS. The client calls these without asking
    get_attr first. Each class is read once."""
    cls = type(obj)
    names = _methods_of_class.get(cls)
    if names is None:
        names = []
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attr = inspect.getattr_static(cls, name, None)
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            if callable(attr) and not isinstance(attr, type):
                names.append(name)
                if len(names) >= _MAX_METHODS:
                    break
        if len(_methods_of_class) >= 256:
            _methods_of_class.clear()
        _methods_of_class[cls] = names
    own = getattr(obj, "__dict__", None)
    return [n for n in names if n not in own] if isinstance(own, dict) and own else list(names)


def _out_arrays(args, kwargs, outs):
    """The arguments named by a call's ``outs`` (positions in args, keys in kwargs): the ndarrays
    the method may fill in place, whose post-call contents go back to the client. Each names an
    ndarray argument, at most once; anything else is a bad_request."""
    if outs is None:
        return []
    if not isinstance(outs, list) or len(outs) > len(args) + len(kwargs):
        raise BadRequest("outs must be a list of argument positions and keyword names")
    seen, found = set(), []
    for o in outs:
        if isinstance(o, int) and not isinstance(o, bool) and 0 <= o < len(args):
            value = args[o]
        elif isinstance(o, str) and o in kwargs:
            value = kwargs[o]
        else:
            raise BadRequest(f"outs entry {o!r} names no argument of this call")
        if o in seen or not isinstance(value, np.ndarray) or value.ndim == 0:
            raise BadRequest(f"outs entry {o!r} must name an ndarray argument, once")
        seen.add(o)
        found.append(value)
    return found


def call(inst, name, args=None, kwargs=None, outs=None):
    """Calls env method ``name`` (through wrappers; a dotted path reaches an attribute's method),
    or reads it if it is not callable. ``outs`` names the ndarray arguments the method fills in
    place (ale.getScreenGrayscale(buf)): the reply's ``outs`` holds their contents after the call."""
    env = _need_env(inst)
    parts = _attr_path(name)
    args = list(args or [])
    kwargs = dict(kwargs or {})
    filled = _out_arrays(args, kwargs, outs)
    last = parts[-1]
    if last in _NAME_TAKING:
        pos, key = _NAME_TAKING[last]
        if len(args) > pos:
            _attr_name(args[pos])
        if key in kwargs:
            _attr_name(kwargs[key])
        if len(args) <= pos and key not in kwargs:
            raise BadRequest(f"{last} needs an attribute name")
    attr = _lookup(env, parts)
    out = _mark_tuples({"value": attr(*args, **kwargs)}, ("value",)) if callable(attr) else {"value": attr}
    if outs is not None:
        out["outs"] = filled
    return _add_warnings(out)


# Private attributes that standard client-side wrappers read from the unwrapped env, readable as
# values (get_attr only: never set, called or passed through): gymnasium's AtariPreprocessing
# refuses to skip frames unless env.unwrapped._frameskip is 1.
_READABLE_PRIVATE = frozenset({"_frameskip"})


def get_attr(inst, name):
    if isinstance(name, str) and name in _READABLE_PRIVATE:
        value = getattr(_need_env(inst).unwrapped, name)
        if not _plain(value):
            raise BadRequest(f"{name} is not a plain value")
        return {"value": value}
    return _describe_attr(_lookup(_need_env(inst), _attr_path(name)))


def set_attr(inst, name, value):
    parts = _attr_path(name)
    env = _need_env(inst)
    if len(parts) == 1:
        env.set_wrapper_attr(parts[0], value)
    else:
        target = _lookup(env, parts[:-1])
        _passable(target, parts, len(parts) - 1)
        setattr(target, parts[-1], value)
    return {}


def spaces_of(inst):
    env = _need_env(inst)
    return {"observation_space": describe_space(env.observation_space),
            "action_space": describe_space(env.action_space)}


def sample(inst, which="action"):
    env = _need_env(inst)
    if which not in ("action", "observation"):
        raise BadRequest("space must be 'action' or 'observation'")
    space = env.action_space if which == "action" else env.observation_space
    return {"value": space.sample()}


def render(inst):
    return {"frame": _need_env(inst).render()}


def close(inst):
    h = _envs.pop(inst, None)
    if h is not None:
        h.env.close()
    return {"closed": True}


def close_all():
    for inst in list(_envs):
        close(inst)


# ---- monitor recordings (gym's Monitor, as the REST dialects' monitor/start and monitor/close) ----
#
# The gateway maps a client's monitor directory inside the operator's --monitor-dir, creates it and
# sends its canonical path; only the gateway may send the `monitor` verb (the broker refuses it from
# native clients). The worker still takes nothing on trust: the path must be absolute, normalized,
# free of symlinks and an existing directory, and the video names are plain.

_VIDEO_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _monitor_directory(directory):
    if not isinstance(directory, str) or not directory or "\0" in directory:
        raise BadRequest("the monitor directory must be a non-empty path", "params")
    if not os.path.isabs(directory) or os.path.normpath(directory) != directory or directory.startswith("//"):
        raise BadRequest(f"the monitor directory {directory!r} must be an absolute, normalized path", "params")
    if os.path.realpath(directory) != directory:
        raise BadRequest(f"the monitor directory {directory!r} must not pass through a symlink", "params")
    if not os.path.isdir(directory):
        raise BadRequest(f"the monitor directory {directory!r} does not exist", "params")
    return directory


def _episode_trigger(video):
    """gym Monitor's video_callable as the gateway passes it: "cubic" (capped_cubic_video_schedule,
    Monitor's default), an int N >= 1 (every Nth episode, as gym-http-api's server made it), or
    False (no video)."""
    if video is False or video is None:
        return None
    if video == "cubic":
        from gymnasium.utils.save_video import capped_cubic_video_schedule

        return capped_cubic_video_schedule
    if isinstance(video, int) and not isinstance(video, bool) and video >= 1:
        return lambda episode: episode % video == 0
    raise BadRequest(f"video must be 'cubic', an integer of at least 1 or false, not {video!r}", "params")


class _Mp4Stream:
    """The frames of one recording, streamed to imageio-ffmpeg's own ffmpeg as they come (H.264,
    yuv420p, every frame kept) instead of held in memory until the episode ends (RecordVideo
    keeps a list: 690 MB for 1000 MuJoCo frames). RecordVideo sees a list-like: append, +=, len.
    ffmpeg writes a file this process created (O_EXCL, a hidden name it could not be tricked into
    following), renamed into place by finish()."""

    def __init__(self, directory, name, fps):
        self.directory, self.name, self.fps = directory, name, fps
        self.count, self._writer, self._tmp = 0, None, None

    def __len__(self):
        return self.count

    def __iadd__(self, frames):
        for f in frames:
            self.append(f)
        return self

    def append(self, frame):
        a = np.asarray(frame)
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"a video frame must be H x W x 3, not {a.shape}")
        if self._writer is None:
            import tempfile

            import imageio_ffmpeg

            fd, self._tmp = tempfile.mkstemp(prefix=".openaigym.", suffix=".mp4", dir=self.directory)
            os.close(fd)
            self._shape = a.shape
            self._writer = imageio_ffmpeg.write_frames(
                self._tmp, (int(a.shape[1]), int(a.shape[0])), fps=self.fps, codec="libx264", quality=None,
                macro_block_size=2, ffmpeg_log_level="error", output_params=["-preset", "ultrafast", "-crf", "23"])
            self._writer.send(None)
        elif a.shape != self._shape:
            raise ValueError(f"a video frame changed shape from {self._shape} to {a.shape}")
        self._writer.send(np.ascontiguousarray(a, dtype=np.uint8))
        self.count += 1

    def finish(self):
        """Closes the stream and moves the MP4 into place as NAME.mp4 (nothing when no frame came)."""
        if self._writer is None:
            return False
        try:
            self._writer.close()
            os.replace(self._tmp, os.path.join(self.directory, self.name + ".mp4"))
        except BaseException:
            self.abort()
            raise
        self._writer = None
        return True

    def abort(self):
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
        if self._tmp:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass


def _write_text(directory, name, text):
    """TEXT to DIRECTORY/NAME through a file this process created (O_EXCL), renamed into place."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".openaigym.", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _MonitorVideo(gym.wrappers.RecordVideo):
    """Gymnasium's RecordVideo (its triggers, frame capture and episode counting), its frames
    streamed to an MP4 as they are captured (_Mp4Stream), and the list of what it wrote kept for
    the manifest. (RecordVideo's own encoder, moviepy's ImageSequenceClip, also drops the last
    frame when frames / fps is not exact in floating point: 501 frames at 50 fps gave 500.)"""

    def __init__(self, env, directory, trigger, name):
        super().__init__(env, directory, episode_trigger=trigger, name_prefix=name, disable_logger=True,
                         gc_trigger=None)
        self.written = []
        self._episode = -1

    def start_recording(self, video_name):
        super().start_recording(video_name)  # stops (and writes) a recording in progress first
        self._episode = self.episode_id
        self.recorded_frames = _Mp4Stream(self.video_folder, video_name, self.frames_per_sec)

    def stop_recording(self):
        frames, name = self.recorded_frames, self._video_name
        self.recorded_frames, self.recording, self._video_name = [], False, None
        if isinstance(frames, _Mp4Stream) and frames.finish():
            meta = {"episode_id": self._episode, "content_type": "video/mp4", "frames": len(frames),
                    "fps": self.frames_per_sec, "encoder_version": {"backend": "ffmpeg"}}
            _write_text(self.video_folder, name + ".meta.json", json.dumps(meta, sort_keys=True))
            self.written.append({"file": name + ".mp4", "meta": name + ".meta.json", "frames": len(frames),
                                 "episode_id": self._episode})


def monitor_start(inst, directory, video, name):
    """Records videos of the episodes ``video`` picks (see _episode_trigger) into ``directory``
    as NAME-episode-K.mp4 (K counting the resets from this start, 0 first). A monitor already
    running on the instance is closed first (its videos flushed). An env that does not render
    rgb_array records no video (gym's Monitor disabled its recorder the same way): the reply says
    why. The statistics are the gateway's."""
    h = _hosted(inst)
    directory = _monitor_directory(directory)
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= _VIDEO_NAME_CHARS:
        raise BadRequest("the video name must be 1 to 64 letters, digits or '_'", "params")
    trigger = _episode_trigger(video)
    previous = monitor_close(inst)["videos"]
    out = {"video": False, "closed_videos": previous}
    if trigger is None:
        return out
    if h.env.render_mode != "rgb_array":
        out["reason"] = f"the env renders {h.env.render_mode!r}, not 'rgb_array': statistics only"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Overwriting existing videos": the directory is the client's own
        h.env = _MonitorVideo(h.env, directory, trigger, "openaigym.video." + name)
    out["video"] = True
    return out


def monitor_close(inst):
    """Stops the recording (the video of an episode in progress is written now) and unwraps the
    env, which goes on as it was. Returns the videos written since monitor_start."""
    h = _hosted(inst)
    rec = h.env
    if not isinstance(rec, _MonitorVideo):
        return {"videos": []}
    try:
        if rec.recording:
            rec.stop_recording()
    finally:
        h.env = rec.env
    return {"videos": rec.written}


def monitor(inst, op, directory=None, video=None, name=None):
    """The `monitor` verb: op "start" (directory, video, name) or "close"."""
    if op == "start":
        return monitor_start(inst, directory, video, name)
    if op == "close":
        return monitor_close(inst)
    raise BadRequest(f"monitor op must be 'start' or 'close', not {op!r}", "params")
