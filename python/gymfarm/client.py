"""The native client: a ZeroMQ DEALER socket speaking docs/protocol.md."""
from __future__ import annotations

import itertools
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import zmq

from . import codec, errors

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class Farm:
    """A connection to a gymfarm broker.

    >>> farm = Farm("tcp://127.0.0.1:5555")
    >>> env = farm.make("CartPole-v1")

    Calls are synchronous and thread-safe (one lock per connection). ``timeout`` (seconds) bounds
    every call; past it :class:`gymfarm.Timeout` is raised.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0,
                 connect_timeout: float = 10.0, context: Optional[zmq.Context] = None):
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._lock = threading.Lock()
        self._rids = itertools.count(1)
        self._closed = False
        try:
            self.server = self.call("hello", body={"version": PROTOCOL_VERSION, "client": "gymfarm-python"},
                                    timeout=connect_timeout)
        except errors.Timeout:
            self._sock.close(0)
            raise errors.FarmUnavailable(f"no gymfarm answers at {endpoint} (is `gymfarm start` running?)") from None

    # -- plumbing -------------------------------------------------------------------------------

    def _exchange(self, frames: List[bytes], rid: int, timeout: Optional[float]) -> List[bytes]:
        if self._closed:
            raise errors.FarmUnavailable("this connection is closed")
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            self._sock.send_multipart(frames, copy=False)
            deadline = time.monotonic() + limit
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                    if time.monotonic() >= deadline:
                        raise errors.Timeout(f"no reply from the farm at {self.endpoint} within {limit:g} s",
                                             {"client_side": True})
                    continue
                reply = self._sock.recv_multipart()
                if len(reply) >= 2 and len(reply[0]) == 8 and struct.unpack("<Q", reply[0])[0] == rid:
                    return reply

    def call(self, verb: str, instance: str = "", body: Optional[Dict[str, Any]] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends one request and returns its result map, or raises the typed error."""
        rid = next(self._rids)
        frames = [verb.encode(), instance.encode(), struct.pack("<Q", rid), codec.pack(body or {})]
        reply = self._exchange(frames, rid, timeout)
        result = codec.unpack(reply[2]) if len(reply) > 2 else {}
        if reply[1] != b"ok":
            raise errors.from_wire(result)
        return result

    def step_batch(self, steps: Sequence[Tuple[str, Any]], timeout: Optional[float] = None
                   ) -> List[Union[Dict[str, Any], errors.GymfarmError]]:
        """Steps many instances in one message: ``[(instance_id, action), ...]``.

        Returns one entry per env, in order: the step result map, or the exception of that env
        (returned, not raised, so one failing env does not hide the others' results).
        """
        if not steps:
            return []
        rid = next(self._rids)
        frames = [b"step_batch", b"", struct.pack("<Q", rid)]
        for instance, action in steps:
            frames.append(instance.encode())
            frames.append(codec.pack({"action": action}))
        reply = self._exchange(frames, rid, timeout)
        if reply[1] != b"ok":
            raise errors.from_wire(codec.unpack(reply[2]))
        out: List[Union[Dict[str, Any], errors.GymfarmError]] = []
        for i in range(len(steps)):
            status, body = reply[2 + 2 * i], codec.unpack(reply[3 + 2 * i])
            out.append(body if status == b"ok" else errors.from_wire(body))
        return out

    # -- verbs ---------------------------------------------------------------------------------

    def make(self, env_id: str, **kwargs: Any) -> "RemoteEnv":
        """Makes an env on a free worker; returns a :class:`gymnasium.Env`."""
        from .env import RemoteEnv

        return RemoteEnv(self, env_id, **kwargs)

    def ping(self) -> bool:
        return bool(self.call("ping").get("pong"))

    def stats(self) -> Dict[str, Any]:
        return self.call("stats")

    def list(self) -> Dict[str, str]:
        """Live instances: ``{instance_id: env_id}``."""
        return self.call("list")["instances"]

    def envs(self) -> List[str]:
        """Env ids registered in the workers' Gymnasium."""
        return list(self.call("envs")["env_ids"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close(0)

    def __enter__(self) -> "Farm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(endpoint: str = DEFAULT_ENDPOINT, **kwargs: Any) -> Farm:
    """Connects to a farm started with ``gymfarm start`` and says hello."""
    return Farm(endpoint, **kwargs)
