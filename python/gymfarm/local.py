"""The local socket: the native protocol's frames over a unix stream socket, for clients on the
farm's own host (docs/protocol.md, "Local socket"). It skips ZeroMQ's I/O threads, whose wake-ups
cost more than an env step on most virtual machines, and it busy-polls briefly for a reply before
sleeping.

Wire format: u32 frame count, then per frame a u32 length and the bytes, in host byte order.

Before anything is sent (the hello carries the token), the socket's owner is checked: the uid of
the process listening on it (``SO_PEERCRED``) must be this process's effective uid. A socket served
by anyone else, root included, is refused with ``PermissionError`` and the client stays on ZeroMQ.
"""
from __future__ import annotations

import array
import logging
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence

from .slab import SlabFds

_U32 = struct.Struct("=I")
_CHUNK = 1 << 16
_MAX_FRAMES = 1 << 20
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FDS_SPACE = socket.CMSG_SPACE(16 * 4)  # room for the descriptors of a few slabs per read

log = logging.getLogger("gymfarm")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected unix socket (-1 if unknown)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return -1
    try:
        _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size))
    except (OSError, struct.error):
        return -1
    return uid


class LinkClosed(ConnectionError):
    """The farm closed the local socket (it stopped or restarted)."""


class LocalLink:
    """Offers the three socket calls the client uses: send_multipart, poll and recv_multipart."""

    def __init__(self, path: str, spin: float = 200e-6):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
            uid = peer_uid(self._sock)
            if uid != os.geteuid():
                log.warning("gymfarm: not using the local socket %s: it is served by uid %d, not by this user "
                            "(uid %d); staying on ZeroMQ", path, uid, os.geteuid())
                raise PermissionError(f"the local socket {path} is served by uid {uid}, not uid {os.geteuid()}")
        except OSError:
            self._sock.close()
            raise
        self._spin = spin
        self._misses = 0
        self._skipped = 0
        self._probe_every = 16
        self._buf = bytearray()
        self._frames: list[bytes] = []
        self._left = -1            # frames still to read in the current message; -1: count not read
        self._big: bytearray | None = None  # a large frame read in place
        self._big_at = 0
        self._messages: deque[list[bytes]] = deque()
        self._fds: deque[int] = deque()  # descriptors that came with messages (slabs), in order
        self.closed = False

    def send_multipart(self, frames: Sequence[bytes], copy: bool = False) -> None:
        parts = [_U32.pack(len(frames))]
        for f in frames:
            parts.append(_U32.pack(len(f)))
            parts.append(f)
        try:
            self._sock.sendall(b"".join(parts))
        except OSError as e:
            self.closed = True
            raise LinkClosed(str(e)) from None

    def recv_multipart(self) -> list[bytes]:
        if not self._messages and not self.poll(None):
            raise LinkClosed("the farm closed the connection")
        return self._messages.popleft()

    def poll(self, timeout_ms: int | None = 0) -> bool:
        """True when a whole message is waiting; waits up to timeout_ms (None: for ever)."""
        if self._messages:
            return True
        if self.closed:
            raise LinkClosed("the farm closed the connection")
        self._read()
        if self._messages or timeout_ms == 0:
            return bool(self._messages)
        # Spin while replies come within the spin; after 4 misses in a row only probe, ever less
        # often (transport/stream.hpp's SpinPolicy): a slow env's client then sleeps instead of
        # taking a core from the workers.
        if self._misses < 4 or self._probe():
            end = time.perf_counter() + self._spin
            while time.perf_counter() < end:
                if self._read():
                    self._misses, self._probe_every = 0, 16
                    return True
            if self._misses < 4:
                self._misses += 1
            else:
                self._probe_every = min(self._probe_every * 2, 1024)
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while not self._messages:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._sock], [], [], left)[0]:
                return False
            self._read()
        return True

    def _probe(self) -> bool:
        self._skipped += 1
        if self._skipped < self._probe_every:
            return False
        self._skipped = 0
        return True

    def close(self, linger: int = 0) -> None:
        self.closed = True
        self._sock.close()
        while self._fds:
            os.close(self._fds.popleft())

    # -- reading -------------------------------------------------------------------------------

    def _read(self) -> bool:
        """Reads what the socket has without blocking; True when a whole message is waiting."""
        while True:
            try:
                if self._big is not None:
                    n = self._sock.recv_into(memoryview(self._big)[self._big_at:], 0, socket.MSG_DONTWAIT)
                    if n:
                        self._big_at += n
                        if self._big_at == len(self._big):
                            self._frames.append(self._big)
                            self._big = None
                            self._left -= 1
                            self._parse()
                        continue
                else:
                    data, anc, _flags, _addr = self._sock.recvmsg(_CHUNK * 4, _FDS_SPACE, socket.MSG_DONTWAIT)
                    for level, kind, fds in anc:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            got = array.array("i")
                            got.frombytes(fds[:len(fds) - len(fds) % got.itemsize])
                            self._fds.extend(got)
                    if data:
                        self._buf += data
                        self._parse()
                        continue
                    n = 0
            except (BlockingIOError, InterruptedError):
                return bool(self._messages)
            except OSError:
                n = 0
            if n == 0:
                self.closed = True
                if self._messages:
                    return True
                raise LinkClosed("the farm closed the connection")

    def _parse(self) -> None:
        buf = self._buf
        at = 0
        while self._big is None:
            if self._left < 0:
                if len(buf) - at < 4:
                    break
                self._left = _U32.unpack_from(buf, at)[0]
                at += 4
                if not 0 < self._left <= _MAX_FRAMES:
                    self.closed = True
                    raise LinkClosed("the farm sent a malformed message")
            if self._left == 0:
                self._complete()
                continue
            if len(buf) - at < 4:
                break
            size = _U32.unpack_from(buf, at)[0]
            if len(buf) - at - 4 >= size:
                self._frames.append(bytes(buf[at + 4:at + 4 + size]))
                at += 4 + size
                self._left -= 1
                continue
            if size < _CHUNK:
                break
            have = len(buf) - at - 4
            self._big = bytearray(size)
            self._big[:have] = buf[at + 4:]
            self._big_at = have
            at = len(buf)
        del buf[:at]
        if self._big is None and self._left == 0:
            self._complete()

    def _complete(self) -> None:
        """A whole message: a make's reply that ends with the ``slab`` frame brought the slab's
        two descriptors, which take that frame's place (a :class:`gymfarm.slab.SlabFds`)."""
        frames = self._frames
        if len(frames) == 4 and frames[3] == b"slab":
            frames[3] = SlabFds(self._fds.popleft(), self._fds.popleft()) if len(self._fds) >= 2 else b""
        self._messages.append(frames)
        self._frames = []
        self._left = -1
