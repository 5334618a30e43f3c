"""MessagePack codec of the gymfarm protocol, written from docs/protocol.md.

ndarrays travel as extension type 1 with payload ``[dtype.str, shape, bytes]``; a shape of ``[]``
is a NumPy scalar. Integers beyond 64 bits travel as extension type 2 with their ASCII decimal
digits. Spaces travel as maps with a ``type`` key.
"""
from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
from gymnasium import spaces

from . import tails

NDARRAY_EXT = 1
BIGINT_EXT = 2
_KINDS = {"b", "i", "u", "f"}


_HEADS: dict = {}  # (dtype.str, shape) -> the packed [dtype, shape, ...] prefix of an ndarray payload


def _ndarray_ext(a: Any) -> msgpack.ExtType:
    """The extension for a contiguous little-endian array or NumPy scalar, assembled from a cached
    prefix: ``[dtype.str, shape, raw]`` as msgpack, the same bytes msgpack.packb would write."""
    key = (a.dtype.str, a.shape)
    head = _HEADS.get(key)
    if head is None:
        if len(_HEADS) > 4096:
            _HEADS.clear()
        head = _HEADS[key] = b"\x93" + msgpack.packb(a.dtype.str) + msgpack.packb(list(a.shape))
    raw = a.tobytes()
    n = len(raw)
    if n < 0x100:
        size = b"\xc4" + n.to_bytes(1, "big")
    elif n < 0x10000:
        size = b"\xc5" + n.to_bytes(2, "big")
    else:
        size = b"\xc6" + n.to_bytes(4, "big")
    return msgpack.ExtType(NDARRAY_EXT, head + size + raw)


def _default(obj: Any) -> Any:
    """What ``pack`` writes for what msgpack does not pack itself: with strict types, that is an int
    beyond 64 bits, a NumPy value (np.float64 too, a float subclass msgpack would write as a float),
    and the subclasses and tuples of the types it packs, written as their base types."""
    if type(obj) is int:  # msgpack calls this for ints beyond 64 bits
        return msgpack.ExtType(BIGINT_EXT, str(obj).encode("ascii"))
    if isinstance(obj, np.generic) and obj.dtype.kind in _KINDS and obj.dtype.byteorder != ">":
        return _ndarray_ext(obj)  # the common case (an action from a vector env): no copies, no nesting
    if isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)
        if a.dtype.kind not in _KINDS:
            raise TypeError(f"cannot send a numpy array of dtype {a.dtype}")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        return _ndarray_ext(np.ascontiguousarray(a) if a.ndim else a)
    for base in _BASES:
        if isinstance(obj, base):
            return _BASES[base](obj)
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


# The bases of the subclasses (IntEnum, OrderedDict, a str enum) and containers msgpack's strict
# types leave to _default: each is written as what it is made into here.
_BASES: dict[type, Any] = {int: int, float: float, str: str, bytes: bytes, bytearray: bytes,
                           tuple: list, list: list, dict: dict, set: list, frozenset: list}


_DTYPES: dict[Any, np.dtype] = {}  # the dtypes of the arrays received, made once each (a few dozen at most)


def _dtype(name: Any) -> np.dtype:
    dt = _DTYPES.get(name)
    if dt is None:
        dt = np.dtype(name)
        if len(_DTYPES) < 64:
            _DTYPES[name] = dt
    return dt


# A NumPy scalar's extension payload ``[dtype.str, [], raw]`` is 0x93, the dtype's fixstr, 0x90,
# bin8's two bytes and the value. A reply's info is often a handful of scalars (a MuJoCo env's
# positions and reward terms): each is read from the cached head before its value instead of being
# unpacked as a nested message (about 0.3 us instead of 0.9). Head -> (a struct that reads the value
# exactly or None, the value's struct code or None, type, dtype); tails.py reads values by the code.
_SCALAR_HEADS: dict[bytes, tuple[struct.Struct | None, str | None, type, np.dtype]] = {}
_STRUCT_CODES = {("b", 1): "?", ("i", 1): "b", ("u", 1): "B", ("i", 2): "h", ("u", 2): "H", ("i", 4): "i",
                 ("u", 4): "I", ("i", 8): "q", ("u", 8): "Q", ("f", 8): "d"}  # read exactly by struct
_FLOAT_CODES = {("f", 2): "e", ("f", 4): "f"}  # read through a double: exact but for a NaN's payload


def _learn_scalar(data: bytes, dt: np.dtype) -> None:
    """Caches the head of a scalar's payload ``data`` (already decoded the long way as ``dt``)."""
    if len(_SCALAR_HEADS) >= 64 or len(data) < 6 or data[0] != 0x93 or not 0xA0 <= data[1] <= 0xBF:
        return
    k = 5 + (data[1] & 0x1F)
    if data[k - 3:k - 1] != b"\x90\xc4" or data[k - 1] != dt.itemsize or len(data) != k + dt.itemsize:
        return
    exact = _STRUCT_CODES.get((dt.kind, dt.itemsize))  # float32/16 through a double would quiet a NaN
    order = ">" if dt.byteorder == ">" else "<"
    code = exact or _FLOAT_CODES.get((dt.kind, dt.itemsize))
    _SCALAR_HEADS[data[:k]] = (struct.Struct(order + exact) if exact else None, code, dt.type, dt)


def scalar_head(data: bytes) -> tuple[int, tuple[struct.Struct | None, str | None, type, np.dtype]] | None:
    """For a NumPy scalar's extension payload whose head was cached: where its value starts, and
    the head's entry in _SCALAR_HEADS. None for any other payload."""
    if not 6 <= len(data) <= 48:
        return None
    k = 5 + (data[1] & 0x1F)
    known = _SCALAR_HEADS.get(data[:k])
    return (k, known) if known is not None and len(data) == k + known[3].itemsize else None


def _ext_hook(code: int, data: bytes) -> Any:
    if code == NDARRAY_EXT:
        found = scalar_head(data)
        if found is not None:
            k, (st, _, typ, dt) = found
            return typ(st.unpack_from(data, k)[0]) if st is not None else np.frombuffer(data, dt, 1, k)[0]
        dtype, shape, raw = msgpack.unpackb(data, raw=False)
        arr = np.frombuffer(raw, dtype=_dtype(dtype))
        if len(shape) != 1 or arr.shape[0] != shape[0]:  # a flat array of the right length is shaped already
            arr = arr.reshape(shape)
        arr = arr.copy()
        if len(shape) != 0:
            return arr
        _learn_scalar(data, arr.dtype)
        return arr[()]
    if code == BIGINT_EXT:
        return int(data.decode("ascii"))
    return msgpack.ExtType(code, data)


_RAW_HEAD = struct.Struct("=6I")  # shm/slab.hpp's raw step reply: flags, lengths, the observation's offset
_RAW_DESCS: dict[bytes, tuple[np.dtype, tuple[int, ...], int, int]] = {}  # descriptor -> dtype, shape, count, bytes


def raw_desc(desc: bytes) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """A raw reply's [dtype, shape] descriptor, checked: what _ext_hook would accept for an array:
    (dtype, shape, count, bytes). Raises ValueError for any other (the compiled slab step asks
    here too)."""
    try:
        name, shape = msgpack.unpackb(desc, raw=False)
        dt = _dtype(name)
    except Exception as e:
        raise ValueError(f"a raw step reply's descriptor cannot be read ({e})") from None
    if (dt.kind not in _KINDS or dt.byteorder == ">" or not isinstance(shape, list) or not 1 <= len(shape) <= 64
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError("a raw step reply's descriptor is not an array's")
    # every stride (and so every size) under 2**62 bytes: no slab holds more, and the compiled
    # step's C++ integers hold them all
    if math.prod(max(d, 1) for d in shape) * dt.itemsize >= 1 << 62:
        raise ValueError("a raw step reply's descriptor is larger than any slab")
    count = math.prod(shape)
    ent = (dt, tuple(shape), count, count * dt.itemsize)
    if len(_RAW_DESCS) < 64:
        _RAW_DESCS[desc] = ent
    return ent


def unpack_raw_step(buf: Any, off: int, n: int) -> dict[str, Any]:
    """A step's reply laid out raw at ``buf[off:off + n]`` (a slab's reply area, shm/slab.hpp): the
    dict ``unpack`` gives for the same reply's MessagePack body, with the observation copied
    straight from the slab. Raises ValueError when the layout does not hold together."""
    head = _RAW_HEAD.size
    if n < head:
        raise ValueError(f"a raw step reply of {n} bytes")
    term, trunc, dl, tl, at, ln = _RAW_HEAD.unpack_from(buf, off)
    if head + dl + tl > at or at + ln != n:
        raise ValueError("a raw step reply's lengths do not add up")
    desc = buf[off + head:off + head + dl]
    ent = _RAW_DESCS.get(desc) or raw_desc(desc)
    dt, shape, count, nbytes = ent
    if nbytes != ln:
        raise ValueError(f"a raw observation of {ln} bytes for {nbytes}")
    obs = np.frombuffer(buf, dt, count, off + at) if count else np.empty(0, dt)
    obs = (obs if len(shape) == 1 else obs.reshape(shape)).copy()
    reward, info = raw_tail(buf, off + head + dl, tl)
    return {"obs": obs, "reward": reward, "terminated": term != 0, "truncated": trunc != 0, "info": info}


def tail_layout(n: int) -> Any:
    """The layout tails.py learned for raw tails of ``n`` bytes, or None."""
    return _TAILS.layout(n)


def raw_tail(buf: Any, at: int, n: int) -> list[Any]:
    """A raw step reply's tail at ``buf[at:at + n]``: [reward, info]. ValueError when it is not."""
    tail = _TAILS.decode(buf, at, n)
    if not isinstance(tail, list) or len(tail) != 2:
        raise ValueError("a raw step reply's tail is not [reward, info]")
    return tail


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)


# (the body's other fields, dtype.str, shape) -> the packed body up to the action's raw bytes
_ACTION_HEADS: dict[tuple[Any, str, tuple[int, ...]], bytes] = {}
_SCALAR_BODY_HEADS: dict[type, bytes] = {}  # NumPy scalar type -> the packed {"action": scalar} up to its bytes
_PLAIN_FIELDS = (str, bool, int, type(None))


def pack_body(body: dict[str, Any]) -> bytes:
    """``pack(body)`` for a step's body whose last field is its action; for an action that is a
    contiguous little-endian array (a Box action) or a NumPy scalar (a Discrete one), the same
    bytes from a cached head and the action's raw bytes. A NumPy scalar always travels as one (a
    float64 too, which ``pack`` writes as a float), so the env gets what it would in process."""
    a = body.get("action")
    kind = type(a)
    if len(body) == 1:  # a single env's step: a scalar's head by its type alone (its dtype is native)
        head = _SCALAR_BODY_HEADS.get(kind)
        if head is not None:
            return head + a.tobytes()
    if (kind is not np.ndarray and not isinstance(a, np.generic)) or next(reversed(body)) != "action":
        return pack(body)
    rest = tuple((k, v) for k, v in body.items() if k != "action") if len(body) > 1 else ()
    head = _head_for(rest, a)
    return pack(body) if head is None else head + a.tobytes()


def action_head(a: Any) -> bytes | None:
    """The packed ``{"action": a}`` up to ``a``'s raw bytes when pack_body writes it from a cached
    head (a C-ordered little-endian array of numbers, or a NumPy scalar), else None. The compiled
    slab step is taught it, and writes such a body itself."""
    return _head_for((), a) if type(a) is np.ndarray or isinstance(a, np.generic) else None


def _head_for(rest: tuple[tuple[str, Any], ...], a: Any) -> bytes | None:
    """pack_body's head for a body of the fields ``rest`` and then the ndarray or NumPy scalar
    action ``a``, or None when it is packed the long way."""
    if type(a) is np.ndarray and (not a.ndim or not a.flags.c_contiguous):
        return None
    dt = a.dtype
    key = (rest, dt.str, a.shape)
    head = _ACTION_HEADS.get(key)
    if head is None:
        if (dt.kind not in _KINDS or dt.byteorder == ">" or not a.nbytes
                or not all(type(v) in _PLAIN_FIELDS for _, v in rest)):
            return None
        if len(_ACTION_HEADS) > 4096:
            _ACTION_HEADS.clear()
        zero = np.zeros(a.shape, dt)
        head = pack({**dict(rest), "action": _ndarray_ext(zero[()] if type(a) is not np.ndarray else zero)})
        _ACTION_HEADS[key] = head = head[:-a.nbytes]
        if not rest and type(a) is not np.ndarray and dt.isnative:
            _SCALAR_BODY_HEADS[type(a)] = head
    return head


def unpack(data: bytes) -> Any:
    if not data:
        return {}
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


_TAILS = tails.Tails(unpack, scalar_head)


def space_from_wire(d: Any) -> spaces.Space:
    """Rebuilds a Gymnasium space equal to the env's own."""
    t = d.get("type") if isinstance(d, dict) else None
    if t == "Box":
        dtype = np.dtype(d["dtype"])
        return spaces.Box(low=np.asarray(d["low"], dtype=dtype), high=np.asarray(d["high"], dtype=dtype),
                          shape=tuple(d["shape"]), dtype=dtype)
    if t == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if t == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(d["nvec"]), dtype=np.dtype(d["dtype"]), start=np.asarray(d["start"]))
    if t == "MultiBinary":
        n = d["n"]
        return spaces.MultiBinary(n if isinstance(n, int) else list(n))
    if t == "Tuple":
        return spaces.Tuple([space_from_wire(s) for s in d["spaces"]])
    if t == "Dict":
        return spaces.Dict(OrderedDict((k, space_from_wire(s)) for k, s in zip(d["keys"], d["spaces"])))
    if t == "Text":
        return spaces.Text(int(d["max_length"]), min_length=int(d["min_length"]), charset=d["charset"])
    if t == "Sequence":
        return spaces.Sequence(space_from_wire(d["space"]), stack=bool(d.get("stack", False)))
    if t == "Graph":
        edge = d.get("edge_space")
        return spaces.Graph(node_space=space_from_wire(d["node_space"]),
                            edge_space=space_from_wire(edge) if edge is not None else None)
    if t == "OneOf":
        return spaces.OneOf([space_from_wire(s) for s in d["spaces"]])
    what = d.get("repr", d) if isinstance(d, dict) else repr(d)
    raise NotImplementedError(f"the farm's env uses a space gymfarm cannot send: {what}")


# Spaces whose values decode as they are (arrays, ints, str): value_to_space passes them through.
_AS_DECODED = frozenset((spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Text))


def value_to_space(space: spaces.Space, value: Any) -> Any:
    """Gives a decoded value the container types of its space (tuples for Tuple, ordered dicts for Dict)."""
    if type(space) in _AS_DECODED:  # the common case, before the containers' checks
        return value
    if isinstance(space, spaces.Tuple) and isinstance(value, (list, tuple)):
        return tuple(value_to_space(s, v) for s, v in zip(space.spaces, value))
    if isinstance(space, spaces.Dict) and isinstance(value, dict):
        return {k: value_to_space(s, value[k]) for k, s in space.spaces.items() if k in value}
    if isinstance(space, spaces.Sequence) and isinstance(value, (list, tuple)) and not space.stack:
        return tuple(value_to_space(space.feature_space, v) for v in value)
    if isinstance(space, spaces.Graph) and isinstance(value, (list, tuple)) and len(value) == 3:
        return spaces.GraphInstance(*value)
    if isinstance(space, spaces.OneOf) and isinstance(value, (list, tuple)) and len(value) == 2:
        i = value[0]
        if isinstance(i, (int, np.integer)) and 0 <= int(i) < len(space.spaces):
            return (i, value_to_space(space.spaces[int(i)], value[1]))  # the index as the env gave it
        return tuple(value)
    return value


def restore_tuples(value: Any, paths: Any) -> Any:
    """Turns the arrays at ``paths`` (key/index paths the worker found tuples at, outermost first)
    back into tuples. Inner paths are rebuilt first, so a tuple inside a tuple stays one."""
    if not isinstance(paths, list):
        return value
    for path in sorted((p for p in paths if isinstance(p, list)), key=len, reverse=True):
        if not path:
            if isinstance(value, list):
                value = tuple(value)
            continue
        parent = value
        try:
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent[path[-1]], list):
                if isinstance(parent, tuple):  # rebuilt already (a shorter path comes later): cannot be
                    continue
                parent[path[-1]] = tuple(parent[path[-1]])
        except (KeyError, IndexError, TypeError):
            continue
    return value


def apply_tuples(reply: Any) -> Any:
    """Applies a reply's ``tuples`` marks ({key: paths}) to its fields, in place."""
    marks = reply.pop("tuples", None) if isinstance(reply, dict) else None
    if isinstance(marks, dict):
        for k, paths in marks.items():
            if k in reply:
                reply[k] = restore_tuples(reply[k], paths)
    return reply


_WARNING_REGISTRIES: dict = {}  # module -> the registry warnings.warn_explicit keeps for "once"/"default"


def emit_warnings(reply: Any) -> None:
    """Re-raises the worker's warnings (a reply's ``warnings``) here, as Python warnings of the same
    category, file and line, so this process's filters decide what is shown."""
    import builtins
    import warnings

    found = reply.pop("warnings", None) if isinstance(reply, dict) else None
    if not isinstance(found, list):
        return
    for w in found:
        if not isinstance(w, dict):
            continue
        category = getattr(builtins, str(w.get("category", "")), None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            from .errors import RemoteWarning

            category = RemoteWarning
        filename = str(w.get("filename", "<farm>"))
        module = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "<farm>"
        registry = _WARNING_REGISTRIES.setdefault(filename, {})
        warnings.warn_explicit(str(w.get("message", "")), category, filename, int(w.get("lineno") or 0),
                               module=module, registry=registry)
