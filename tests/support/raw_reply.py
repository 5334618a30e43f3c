"""A raw step reply laid out as the worker lays it out (shm/slab.hpp), for the codec's and the
compiled slab step's tests."""
import msgpack
import numpy as np

from gymfarm import codec


def raw_reply(obs, reward=1.0, info=None, term=0, trunc=0, desc=None, at=None, ln=None, tail=None):
    """A raw step reply as the worker lays it out (shm/slab.hpp), with any field overridden."""
    desc = msgpack.packb([obs.dtype.str, list(obs.shape)]) if desc is None else desc
    tail = codec.pack([reward, info or {}]) if tail is None else tail
    head = 24 + len(desc) + len(tail)
    at = (head + 63) // 64 * 64 if at is None else at
    raw = obs.tobytes()
    ln = len(raw) if ln is None else ln
    buf = bytearray(8 + at + len(raw))  # at offset 8 of its buffer, as the reply area is within a slab
    buf[8:32] = np.array([term, trunc, len(desc), len(tail), at, ln], dtype="<u4").tobytes()
    buf[32:32 + len(desc)] = desc
    buf[32 + len(desc):32 + len(desc) + len(tail)] = tail
    buf[8 + at:8 + at + len(raw)] = raw
    return bytes(buf), at + ln
