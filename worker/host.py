# The env host that runs inside every gymfarm-worker (embedded at build time).
# It holds exactly one Gymnasium env and turns protocol requests into env calls. Results are
# plain Python objects plus numpy arrays; the C++ side packs them straight from their buffers.
import importlib

import numpy as np
import gymnasium as gym
from gymnasium import spaces


class BadAction(Exception):
    """The action is not in the env's action space (protocol code bad_action)."""


class BadRequest(Exception):
    """The request itself is wrong: unknown env id, missing env (protocol code bad_request)."""


_env = None
_needs_reset = False  # the last step ended an episode (for autoreset "next_step")


def import_modules(names):
    for name in names:
        importlib.import_module(name)


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
    return {"type": "Unsupported", "repr": repr(s)}


def coerce(space, value):
    """Turns a decoded value (lists for tuples, plain numbers) into what the space holds."""
    if isinstance(space, (spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)):
        if isinstance(value, np.ndarray) and value.dtype == space.dtype:
            return value
        try:
            return np.asarray(value, dtype=space.dtype)
        except (TypeError, ValueError) as e:
            raise BadAction(f"cannot read {value!r} as {space}: {e}") from None
    if isinstance(space, spaces.Discrete):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise BadAction(f"{value!r} is not an integer action of {space}")
        return np.int64(value)
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(space.spaces):
            raise BadAction(f"{value!r} does not fit {space}")
        return tuple(coerce(s, v) for s, v in zip(space.spaces, value))
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict):
            raise BadAction(f"{value!r} does not fit {space}")
        return {k: coerce(s, value.get(k)) for k, s in space.spaces.items()}
    return value


def _metadata(md):
    out = {}
    for k, v in dict(md or {}).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[str(k)] = list(v)
    return out


def _need_env():
    if _env is None:
        raise BadRequest("this worker holds no env")
    return _env


def make(env_id, kwargs):
    global _env
    if not isinstance(env_id, str) or ":" in env_id:
        raise BadRequest(f"bad env id {env_id!r}: custom env packages are loaded by the operator "
                         "(gymfarm start --import MODULE), not named by clients")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise BadRequest("make kwargs must be a map")
    try:
        env = gym.make(env_id, **kwargs)
    except (gym.error.UnregisteredEnv, gym.error.DeprecatedEnv) as e:
        raise BadRequest(str(e)) from None
    _env = env
    spec = env.spec
    return {
        "env_id": env_id,
        "observation_space": describe_space(env.observation_space),
        "action_space": describe_space(env.action_space),
        "render_mode": env.render_mode,
        "metadata": _metadata(env.metadata),
        "spec": {
            "id": spec.id if spec else env_id,
            "max_episode_steps": spec.max_episode_steps if spec else None,
            "reward_threshold": spec.reward_threshold if spec else None,
        },
    }


def reset(seed=None, options=None):
    global _needs_reset
    env = _need_env()
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed must be an integer or nil")
    obs, info = env.reset(seed=seed, options=options)
    _needs_reset = False
    return {"obs": obs, "info": info}


def step(action, autoreset=None):
    """One step. ``autoreset`` follows Gymnasium's vector autoreset modes:
    "next_step": a step after an episode ended resets instead (action ignored, reward 0);
    "same_step": an episode that ends is reset at once, its last obs/info in final_obs/final_info."""
    global _needs_reset
    env = _need_env()
    if autoreset not in (None, "next_step", "same_step"):
        raise BadRequest("autoreset must be 'next_step', 'same_step' or nil")
    if autoreset == "next_step" and _needs_reset:
        obs, info = env.reset()
        _needs_reset = False
        return {"obs": obs, "reward": 0.0, "terminated": False, "truncated": False, "info": info}
    a = coerce(env.action_space, action)
    if not env.action_space.contains(a):
        raise BadAction(f"action {action!r} is not in the action space {env.action_space}")
    obs, reward, terminated, truncated, info = env.step(a)
    out = {"obs": obs, "reward": reward, "terminated": bool(terminated),
           "truncated": bool(truncated), "info": info}
    _needs_reset = bool(terminated or truncated)
    if autoreset == "same_step" and _needs_reset:
        out["final_obs"], out["final_info"] = obs, info
        out["obs"], out["info"] = env.reset()
        _needs_reset = False
    return out


def _attr_name(name):
    if not isinstance(name, str) or not name or name.startswith("_"):
        raise BadRequest(f"attribute name {name!r} must be a non-empty string not starting with '_'")
    return name


def call(name, args=None, kwargs=None):
    """Calls env method ``name`` (through wrappers), or reads it if it is not callable."""
    env = _need_env()
    attr = env.get_wrapper_attr(_attr_name(name))
    if callable(attr):
        return {"value": attr(*(args or []), **(kwargs or {}))}
    return {"value": attr}


def get_attr(name):
    return {"value": _need_env().get_wrapper_attr(_attr_name(name))}


def set_attr(name, value):
    _need_env().set_wrapper_attr(_attr_name(name), value)
    return {}


def spaces_of():
    env = _need_env()
    return {"observation_space": describe_space(env.observation_space),
            "action_space": describe_space(env.action_space)}


def sample(which="action"):
    env = _need_env()
    if which not in ("action", "observation"):
        raise BadRequest("space must be 'action' or 'observation'")
    space = env.action_space if which == "action" else env.observation_space
    return {"value": space.sample()}


def render():
    return {"frame": _need_env().render()}


def close():
    global _env
    env, _env = _env, None
    if env is not None:
        env.close()
    return {"closed": True}
