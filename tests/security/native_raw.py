"""Raw native-protocol peers for the attack tests: a ZeroMQ DEALER (with a routing id of the
attacker's choosing) and the farm's local unix socket, speaking frames without the client's help."""
from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

import msgpack
import zmq

_U32 = struct.Struct("<I")


def rid(n: int) -> bytes:
    return struct.pack("<Q", n)


class RawZmq:
    def __init__(self, endpoint: str, routing_id: bytes | None = None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(endpoint)

    def send(self, frames: Sequence[bytes]) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 10.0) -> list[bytes] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv_multipart()

    def request(self, verb: bytes, instance: bytes = b"", body=None, n: int = 1, raw_body: bytes | None = None,
                timeout: float = 10.0) -> list[bytes] | None:
        self.send([verb, instance, rid(n), raw_body if raw_body is not None else msgpack.packb(body or {})])
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close(0)


class RawLocal:
    """The farm's local unix socket: u32 frame count, then u32 length and bytes per frame."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""

    def send(self, frames: Sequence[bytes]) -> None:
        out = [_U32.pack(len(frames))]
        for f in frames:
            out += [_U32.pack(len(f)), f]
        self.sock.sendall(b"".join(out))

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the farm closed the local socket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout: float = 10.0) -> list[bytes]:
        self.sock.settimeout(timeout)
        (count,) = _U32.unpack(self._take(4))
        return [self._take(_U32.unpack(self._take(4))[0]) for _ in range(count)]

    def request(self, verb: bytes, instance: bytes = b"", body=None, n: int = 1, raw_body: bytes | None = None,
                timeout: float = 10.0) -> list[bytes]:
        self.send([verb, instance, rid(n), raw_body if raw_body is not None else msgpack.packb(body or {})])
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close()


def error_of(reply: list[bytes]) -> dict:
    assert reply is not None, "no reply"
    assert reply[1] == b"err", reply
    return msgpack.unpackb(reply[2])


def call_method(env, name, args=None, kwargs=None):
    """The raw `call` verb on a RemoteEnv: what a client that bypasses RemoteEnv's methods sends."""
    return env._call("call", {"name": name, "args": args or [], "kwargs": kwargs or {}})["value"]


def read_http_response(s):
    """One HTTP response from a raw socket: (status line and headers as text, body bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        rest += s.recv(65536)
    return head.decode(), rest
