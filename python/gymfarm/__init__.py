"""gymfarm: Gymnasium envs in isolated worker processes, reached over ZeroMQ + MessagePack.

>>> import gymfarm
>>> farm = gymfarm.connect("tcp://127.0.0.1:5555")
>>> env = farm.make("CartPole-v1")
>>> obs, info = env.reset(seed=0)
"""
from .client import DEFAULT_ENDPOINT, PROTOCOL_VERSION, Farm, connect
from .env import RemoteEnv
from .errors import (BadAction, BadRequest, CapacityExhausted, EnvError, FarmUnavailable, GymfarmError,
                     Overloaded, ShuttingDown, Timeout, Unauthorized, UnknownInstance, WorkerCrashed)

__all__ = [
    "connect", "Farm", "RemoteEnv", "DEFAULT_ENDPOINT", "PROTOCOL_VERSION",
    "GymfarmError", "BadRequest", "UnknownInstance", "BadAction", "EnvError", "WorkerCrashed", "Timeout",
    "CapacityExhausted", "Overloaded", "ShuttingDown", "Unauthorized", "FarmUnavailable",
]
__version__ = "0.1.0"
