"""The client's side of the shared-memory data plane (docs/protocol.md "Shared memory").

An instance made over the farm's local socket with ``shm`` gets a slab: a sealed memfd the broker
created and the worker holding the instance maps too, and the worker's doorbell (an eventfd).
``step`` and ``reset`` then travel through it, without the broker: the client writes the request's
MessagePack body into the request area and bumps ``req_seq``; the worker writes the reply (the same
body the socket would carry) into the reply area and then sets ``done_seq``. A step is posted as
``STEP_RAW``: the worker may then lay its reply out raw (``OK_RAW``), the observation's bytes copied
from the env's array into the slab and from there into the client's array, with no MessagePack in
between (codec.unpack_raw_step). The layout is shm/slab.hpp's. Nothing here trusts the slab:
offsets and lengths are checked before use.

Where the package's compiled slab step is built (gymfarm._slab_port, python/ext), a slab's posts,
spins and raw replies go through it: one call writes a step's action, posts it, awaits it and reads
its observation and its tail (from the layout tails.py learned, which this module teaches it).
Sleeping, MessagePack replies, errors and learning stay here, and so does all of it where the
module is not built or ``GYMFARM_PURE_SLAB=1`` is set.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
import time
from typing import Any, Callable

import numpy as np

from . import codec

try:
    from . import _slab_port  # type: ignore[attr-defined]
except ImportError:  # not built (a package installed without the build): the Python below does it all
    _slab_port = None
if os.environ.get("GYMFARM_PURE_SLAB"):
    _slab_port = None

MAGIC = 0x4C534647
VERSION = 2
HEADER = 256
# word indices (u32) and (u64) of shm/slab.hpp's offsets
_SIZE_Q = 8 // 8
_REQ_OFF, _REQ_CAP, _REP_OFF, _REP_CAP = 16 // 4, 20 // 4, 24 // 4, 28 // 4
_REQ_SEQ, _REQ_VERB, _REQ_LEN, _CLIENT_WAITING, _WORKER_SPIN = 64 // 4, 68 // 4, 72 // 4, 76 // 4, 80 // 4
_DONE_SEQ, _REP_STATUS, _REP_LEN, _STATE = 128 // 4, 132 // 4, 136 // 4, 140 // 4
STEP_NS_Q = _STEP_NS_Q = 144 // 8  # the worker's recent time per request, ns
_WORKER_SLEEPING = 192 // 4

STEP, RESET, STEP_RAW, STEP_VEC = 1, 2, 3, 4
# REFUSED: a STEP_VEC the worker did not run (an env named has no slab of this session there)
OK, ERR, SPILLED, OK_RAW, REFUSED = 0, 1, 2, 3, 4
GRANTED, ATTACHED, DEAD = 0, 1, 2
# wait()'s answer when the slab died with the request unanswered: ask again over the socket, where
# the instance's tombstone answers (nothing runs: the instance has no route any more)
UNANSWERED = -1

# The actions the compiled step writes itself: ndarrays and NumPy scalars of numbers
_BUFFER_TYPES = frozenset([np.ndarray, *(np.dtype(c).type for c in "?bBhHiIlLqQefd")])

_FUTEX_WAIT = 0
# A client that spins for a step longer than this first dozes until this long before its expected
# end: the timer's slack (50 us) and a wake-up (tens of us on virtual machines) fit in it.
_NAP_MARGIN = 150e-6
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_syscall = None
if _SYS_FUTEX is not None:
    try:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
    except (OSError, AttributeError):
        _syscall = None


def supported() -> bool:
    """Whether this process can use slabs (Linux on x86-64 or arm64, futex through libc)."""
    return _syscall is not None and hasattr(os, "eventfd_write")


class SlabError(Exception):
    """The slab's contents are not a slab's (a misbehaving process wrote it)."""


class SlabFds:
    """The two descriptors a make's reply brought (memfd, doorbell); closed unless taken."""

    def __init__(self, memfd: int, doorbell: int):
        self.memfd, self.doorbell = memfd, doorbell

    def take(self) -> tuple[int, int]:
        fds, self.memfd, self.doorbell = (self.memfd, self.doorbell), -1, -1
        return fds

    def close(self) -> None:
        for fd in self.take():
            if fd >= 0:
                os.close(fd)

    def __del__(self) -> None:
        self.close()


class Slab:
    """One instance's slab, mapped. ``post`` then ``wait``, one request at a time."""

    def __init__(self, fds: SlabFds, spin: float):
        memfd, self._doorbell = fds.take()
        try:
            size = os.fstat(memfd).st_size
            if not 64 * 1024 <= size <= 1 << 30:
                raise SlabError(f"not a slab: {size} bytes")
            self._mm = mmap.mmap(memfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            # the compiled step's own mapping and doorbell (it checks the header and the seals too)
            self._port = _slab_port.Port(memfd, self._doorbell, codec.raw_desc) if _slab_port else None
        except ValueError as e:
            self._mm = None
            os.close(self._doorbell)
            raise SlabError(str(e)) from None
        except BaseException:
            self._mm = None
            os.close(self._doorbell)
            raise
        finally:
            os.close(memfd)
        self._w = memoryview(self._mm).cast("I")
        self._q = memoryview(self._mm).cast("Q")
        w = self._w
        self._req_off, self._req_cap = w[_REQ_OFF], w[_REQ_CAP]
        self._rep_off, self._rep_cap = w[_REP_OFF], w[_REP_CAP]
        if self._port is not None and self._port.areas != (self._req_off, self._req_cap, self._rep_off, self._rep_cap):
            self.close()  # the header changed between the two mappings' reads: both must read the same areas
            raise SlabError("not a slab: its header changed while it was mapped")
        if (w[0] != MAGIC or w[1] != VERSION or self._q[_SIZE_Q] != size or self._req_off < HEADER
                or self._req_off + self._req_cap > self._rep_off or self._rep_off + self._rep_cap > size):
            self.close()
            raise SlabError("not a slab: bad header")
        self._done = ctypes.c_uint32.from_buffer(self._mm, _DONE_SEQ * 4)
        self._done_addr = ctypes.addressof(self._done)
        self._seq = w[_REQ_SEQ]
        self.spin = spin  # seconds wait() busy-polls, while the worker's requests take less
        self.worker_spin = True  # whether the worker may busy-poll for this client's next request
        self.raw_replies = 0  # steps answered laid out raw
        self.sleeps = 0  # waits that ended asleep on done_seq rather than spinning
        self._ready = 0  # waits that found the reply already there (the port counts its own)
        self._spun = False  # the port's step waited for the request posted last: its wait does not spin
        self._taught: dict[int, Any] = {}  # tail length -> the tails.py layout the port was taught
        self._fence = threading.Lock()

    @property
    def ready(self) -> int:
        """Waits that found the reply there already (a client descheduled right after posting)."""
        port = getattr(self, "_port", None)
        return self._ready + (port.ready if port is not None else 0)

    @property
    def usable(self) -> bool:
        """The worker serves it (and the instance lives)."""
        return getattr(self, "_mm", None) is not None and self._w[_STATE] == ATTACHED

    def post(self, verb: int, body: bytes) -> bool:
        """Writes a request and rings the worker if it sleeps. False when it does not fit."""
        if self._port is not None:
            return self._port.post(verb, body, self.worker_spin)
        n = len(body)
        if n > self._req_cap:
            return False
        w = self._w
        self._mm[self._req_off:self._req_off + n] = body
        w[_REQ_VERB] = verb
        w[_REQ_LEN] = n
        w[_WORKER_SPIN] = 1 if self.worker_spin else 0
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        w[_REQ_SEQ] = self._seq
        # A lock's acquire is a locked instruction: the store above is seen before the load below,
        # so a worker that went to sleep after its last look at req_seq is rung (slab.hpp).
        with self._fence:
            sleeping = w[_WORKER_SLEEPING]
        if sleeping:
            os.eventfd_write(self._doorbell, 1)
        return True

    def wait(self, timeout: float, alive: Callable[[], None]) -> tuple[int, Any]:
        """The reply to the request posted last: (status, body), or (OK_RAW, the decoded reply) for
        a step laid out raw. Busy-polls while the worker's
        recent requests took less than the spin (dozing first through all but the last 150 us of
        a longer one), then sleeps on done_seq. ``alive`` raises when
        the farm is gone. Raises TimeoutError after ``timeout`` (the farm's own step deadline
        answers well before a sensible client timeout)."""
        w, port = self._w, self._port
        if port is not None:
            seq = port.seq
            if self._spun:  # the port's step waited already: sleep now unless the reply is there
                self._spun = False
                got = port.done
            else:
                got = port.spin(self.spin)
            if not got and not self._sleep(seq, timeout, alive):
                return UNANSWERED, None
        elif w[_DONE_SEQ] != self._seq:
            seq = self._seq
            recent = self._q[_STEP_NS_Q] * 1e-9
            if recent < self.spin:
                if recent > _NAP_MARGIN:  # doze through most of a long step, awake before its end
                    self._futex_wait(seq, recent - _NAP_MARGIN)
                end = time.perf_counter() + self.spin
                while w[_DONE_SEQ] != seq and time.perf_counter() < end:
                    pass
            if w[_DONE_SEQ] != seq and not self._sleep(seq, timeout, alive):
                return UNANSWERED, None
        else:
            self._ready += 1
        status, n = w[_REP_STATUS], w[_REP_LEN]
        if status in (SPILLED, REFUSED):
            return status, None
        if status not in (OK, ERR, OK_RAW) or n > self._rep_cap:
            raise SlabError(f"a reply with status {status} and {n} bytes")
        if status == OK_RAW:
            try:
                if port is None:
                    reply = codec.unpack_raw_step(self._mm, self._rep_off, n)
                else:
                    got = port.read_raw()
                    if got is None:  # the status or length changed under it
                        raise ValueError("the reply changed while it was read")
                    obs, reward, term, trunc, info = got if got.__class__ is tuple else self._rest(got)
                    reply = {"obs": obs, "reward": reward, "terminated": term, "truncated": trunc, "info": info}
            except ValueError as e:
                raise SlabError(str(e)) from None
            self.raw_replies += 1
            return OK_RAW, reply
        return status, self._mm[self._rep_off:self._rep_off + n]

    def step(self, body: bytes) -> Any:
        """Posts a step (``STEP_RAW``): (obs, reward, terminated, truncated, info) when the compiled
        step got its raw reply while it spun; True when it was posted and ``wait`` gives its reply;
        False when it was not (the slab is not served, or the body does not fit). Raises SlabError
        for a raw reply that does not hold together."""
        port = self._port
        if port is None:
            return self.usable and self.post(STEP_RAW, body)
        try:
            return self._took(port.step(body, self.spin, self.worker_spin))
        except ValueError as e:
            raise SlabError(str(e)) from None

    def step_action(self, action: Any) -> Any:
        """``step`` of the body ``{"action": action}``; an ndarray or NumPy scalar action is written
        into the slab by the compiled step itself, from the head it was taught for its kind."""
        port = self._port
        if port is None or action.__class__ not in _BUFFER_TYPES:
            return self.step(codec.pack_body({"action": action}))
        try:
            got = port.step_action(action, self.spin, self.worker_spin)
            if got.__class__ is not int or got < 3:
                return self._took(got)
        except ValueError as e:
            raise SlabError(str(e)) from None
        if got == 3:  # not written there: taught its head, and packed here this time
            port.learn_head(action, codec.action_head(action))
        return self.step(codec.pack_body({"action": action}))

    def _took(self, got: Any) -> Any:
        """The port's answer to a step, as ``step`` gives it."""
        kind = got.__class__
        if kind is list:
            got = self._rest(got)
        elif kind is not tuple:
            self._spun = got != 0  # posted, and waited for by the port (1: no reply yet; 2: one not raw)
            return got != 0
        self.raw_replies += 1
        return got

    def _rest(self, got: list[Any]) -> tuple[Any, ...]:
        """A raw reply the port read but for its tail: the tail read by tails.py, and the port
        taught (or made to forget) the layout tails.py now has for tails of that length."""
        obs, term, trunc, at, tl = got
        mm, port = self._mm, self._port
        if mm is None or port is None:
            raise ValueError("the slab was closed while its reply was read")
        reward, info = codec.raw_tail(mm, self._rep_off + at, tl)
        lay = codec.tail_layout(tl)
        if self._taught.get(tl) is not lay:
            port.learn_tail(tl, lay.spec if lay is not None else None)
            self._taught[tl] = lay
        return (obs, reward, term, trunc, info)

    def _sleep(self, seq: int, timeout: float, alive: Callable[[], None]) -> bool:
        w = self._w
        deadline = time.monotonic() + timeout
        w[_CLIENT_WAITING] = 1
        self.sleeps += 1
        dead_since = None
        try:
            while True:
                seen = w[_DONE_SEQ]
                if seen == seq:
                    return True
                if w[_STATE] == DEAD:  # whoever marked it dead answers a waiting request right after
                    dead_since = dead_since or time.monotonic()
                    if time.monotonic() - dead_since > 0.2:
                        return False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self._futex(seen, min(left, 0.05))
                alive()
        finally:
            w[_CLIENT_WAITING] = 0

    def _futex_wait(self, seq: int, seconds: float) -> None:
        """Sleeps on done_seq for at most ``seconds``, woken at once by the reply to ``seq``."""
        w = self._w
        w[_CLIENT_WAITING] = 1
        try:
            seen = w[_DONE_SEQ]
            if seen != seq:
                self._futex(seen, seconds)
        finally:
            w[_CLIENT_WAITING] = 0

    def _futex(self, seen: int, seconds: float) -> None:
        ts = _Timespec(int(seconds), int((seconds % 1) * 1e9))
        _syscall(_SYS_FUTEX, ctypes.c_void_p(self._done_addr), _FUTEX_WAIT, ctypes.c_uint32(seen),
                 ctypes.byref(ts), None, 0)

    def close(self) -> None:
        if getattr(self, "_mm", None) is None:
            return
        self._done = None
        self._port = None
        self._w.release()
        self._q.release()
        try:
            self._mm.close()
        except BufferError:  # a ctypes view still lives: the mapping goes with the object
            pass
        self._mm = None
        os.close(self._doorbell)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

