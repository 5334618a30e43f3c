"""gymfarm: Gymnasium envs in isolated worker processes, reached over ZeroMQ + MessagePack.

>>> import gymfarm
>>> farm = gymfarm.connect("tcp://127.0.0.1:5555")
>>> env = farm.make("CartPole-v1")
>>> obs, info = env.reset(seed=0)
"""
from .client import DEFAULT_ENDPOINT, PROTOCOL_VERSION, Farm, connect
from .env import RemoteEnv
from .errors import (
    BadAction,
    BadRequest,
    CapacityExhausted,
    EnvError,
    FarmUnavailable,
    GymfarmError,
    Overloaded,
    ResourceLimit,
    ShuttingDown,
    Timeout,
    Unauthorized,
    UnknownInstance,
    WorkerCrashed,
)
from .registration import register_local_ids as _register_local_ids
from .registration import register_remote
from .vector import RemoteVectorEnv

__all__ = [
    "connect", "Farm", "RemoteEnv", "RemoteVectorEnv", "register_remote", "make_vec", "DEFAULT_ENDPOINT",
    "PROTOCOL_VERSION",
    "GymfarmError", "BadRequest", "UnknownInstance", "BadAction", "EnvError", "WorkerCrashed", "Timeout",
    "CapacityExhausted", "Overloaded", "ResourceLimit", "ShuttingDown", "Unauthorized", "FarmUnavailable",
]
__version__ = "0.1.0"

_register_local_ids()


def make_vec(env_id: str, num_envs: int = 1, endpoint: str = DEFAULT_ENDPOINT, **kwargs) -> RemoteVectorEnv:
    """``gymfarm.make_vec("CartPole-v1", num_envs=8)``: a vector env on the farm at ``endpoint``
    (several farms: a list of endpoints, a FarmCluster or a cluster file; see gymfarm.sharded)."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        farm = connect(endpoint, **{k: kwargs.pop(k) for k in ("token", "timeout") if k in kwargs})
        return farm.make_vec(env_id, num_envs=num_envs, owns_farm=True, **kwargs)
    return RemoteVectorEnv(endpoint, env_id, num_envs=num_envs, **kwargs)
