"""Raw step replies and their tails laid out as the worker lays them out (shm/slab.hpp), and a
comparison in type and bits, for the codec's and the compiled slab step's tests."""
import msgpack
import numpy as np

from gymfarm import codec

# Observations a raw reply carries, of each kind the worker lays out raw
RAW_OBSERVATIONS = [np.arange(4, dtype=np.float32), np.zeros((210, 160, 3), np.uint8),
                    np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.zeros((0, 3), np.float64),
                    np.array([True, False])]

# Changes to a raw reply of np.arange(4, dtype=np.float32) (raw_reply's fields) that break its layout
BROKEN_LAYOUTS = [
    {"ln": 12},  # fewer bytes than the descriptor's array
    {"at": 8},  # the observation overlaps the descriptor
    {"desc": msgpack.packb([">f4", [4]])},  # big-endian
    {"desc": msgpack.packb(["|O", [4]])},  # objects
    {"desc": msgpack.packb(["<f4", [-4]])},  # a negative dimension
    {"desc": msgpack.packb(["<f4", []])},  # 0-d: never laid out raw
    {"desc": b"\xc1"},  # not MessagePack
]


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


def worker_tail(reward, info):
    """A raw reply's tail as the worker packs it: NumPy scalars as ndarray extensions (np.float64
    too, which msgpack would pack as a float)."""
    def wire(v):
        if isinstance(v, np.generic):
            return codec._ndarray_ext(v)
        if isinstance(v, dict):
            return {k: wire(x) for k, x in v.items()}
        if isinstance(v, list):
            return [wire(x) for x in v]
        return v
    return msgpack.packb([wire(reward), wire(info)], default=codec._default, use_bin_type=True)


def same(a, b):
    """Equal in type and bits, all the way down (a NaN's payload too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.generic, np.ndarray)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return a == b


def nan_with(bits, dtype):
    return np.frombuffer(np.array([bits], dtype="<u" + dtype[-1]).tobytes(), dtype)[0]


def tails_of_one_shape(seed):
    """Tails of one shape (HalfCheetah's and more), values changing, and now and then a change of
    the bytes around them: a plain value, a key, a type, a nesting."""
    rng = np.random.default_rng(seed)
    for t in range(60):
        info = {"x": np.float64(rng.normal()), "f32": np.float32(rng.normal()), "f16": np.float16(rng.normal()),
                "i": np.int64(rng.integers(-2**63, 2**63 - 1)), "u": np.uint8(rng.integers(256)),
                "b": np.bool_(rng.integers(2)), "u64": np.uint64(2**64 - 1 - t), "label": "same", "none": None,
                "flt": 0.5, "n": 7}
        if t % 7 == 3:
            info["f32"] = nan_with(0x7FC00001 + t, "<f4")  # NaNs with payloads keep them
            info["f16"] = nan_with(0x7E01 + t, "<f2")
            info["x"] = nan_with(0x7FF8000000000001 + t, "<f8")
        if t % 5 == 1:
            info["n"] = t  # a plain value changes: the same length, other fixed bytes
        if t % 11 == 2:
            info["lable"] = info.pop("label")  # a key of the same length
        if t % 13 == 4:
            info["f32"] = np.int32(5)  # another type of the same size
        if t % 17 == 5:
            info["deep"] = {"x": np.float64(t)}  # nested: never a layout
        reward = np.float64(rng.normal()) if t % 9 else np.float32(1.5)
        yield reward, info
