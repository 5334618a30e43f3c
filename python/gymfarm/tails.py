"""A raw step reply's tail ``[reward, info]`` (docs/protocol.md "Shared memory") read from a learned
layout instead of being unpacked.

An env's step replies mostly share one tail layout: the same info keys, the same value types, only
the values of its NumPy scalars changing (a MuJoCo env's reward, positions and reward terms). The
first tail of a length is unpacked the long way and its layout learned: the MessagePack bytes that
must stay the same (headers, keys, plain values) and where each NumPy scalar's value lies. A later
tail of that length is read with one ``struct`` call; if any byte outside the values differs, it is
unpacked the long way after all. Either way the result is what ``unpack`` gives, value for value and
bit for bit (a float32 or float16 NaN is read from its bytes, keeping its payload).
"""
from __future__ import annotations

import operator
import struct
from typing import Any, Callable

import numpy as np

_PLAIN = (bool, int, float, str, type(None))  # decoded values that are immutable: shared between replies
_MAX_LAYOUTS = 64  # tail lengths remembered
_MAX_TRIES = 8  # layouts learned for one length before it is always unpacked (its plain values change)
_NAN_CODES = ("f", "e")  # read through a double by struct: a NaN is read from its bytes instead


class _Layout:
    """What one tail length's bytes hold: ``st`` reads fixed runs and values in order."""

    __slots__ = ("st", "fixed", "fixed_bytes", "plan", "keys", "nans", "spec")

    def __init__(self, fmt: str, fixed_at: list[int], plan: list[tuple[int, Any]], keys: tuple[str, ...],
                 nans: list[tuple[int, int, np.dtype]], data: bytes, spec: tuple[Any, ...] | None):
        self.st = struct.Struct(fmt)
        # itemgetter of one index gives the item, of several a tuple: compared with what it gave here
        self.fixed = operator.itemgetter(*fixed_at)
        self.fixed_bytes = self.fixed(self.st.unpack_from(data, 0))
        self.plan = plan  # per value, reward first: (index in st's items, type) or (-1, the plain value)
        self.keys = keys
        self.nans = nans  # (position in plan, offset in the tail, dtype) of float32/16 values
        # the same layout by offsets, for the compiled slab step (python/ext): ([(offset, fixed
        # bytes)], [(offset, struct code, type) or (-1, "", plain value)], keys); None with float16s
        self.spec = spec


class Tails:
    """Tail layouts by length. ``unpack`` decodes a tail the long way; ``scalar_head`` is
    codec.scalar_head: for a NumPy scalar's payload whose head is known, where its value starts and
    (struct, struct code, type, dtype)."""

    def __init__(self, unpack: Callable[[bytes], Any], scalar_head: Callable[[bytes], Any]):
        self._unpack = unpack
        self._scalar_head = scalar_head
        self._layouts: dict[int, _Layout | None] = {}
        self._tries: dict[int, int] = {}

    def layout(self, n: int) -> _Layout | None:
        """The layout learned for tails of ``n`` bytes, if any."""
        return self._layouts.get(n)

    def decode(self, buf: Any, start: int, n: int) -> Any:
        """The tail at ``buf[start:start + n]``, as ``unpack`` gives it."""
        lay = self._layouts.get(n)
        if lay is not None:
            vals = lay.st.unpack_from(buf, start)
            if lay.fixed(vals) == lay.fixed_bytes:
                out = [typ(vals[i]) if i >= 0 else typ for i, typ in lay.plan]
                for j, off, dt in lay.nans:
                    if out[j] != out[j]:
                        out[j] = np.frombuffer(buf, dt, 1, start + off)[0]
                return [out[0], dict(zip(lay.keys, out[1:]))]
        data = bytes(buf[start:start + n])
        tail = self._unpack(data)
        tries = self._tries.get(n, 0)
        if tries < _MAX_TRIES and (n in self._tries or len(self._tries) < _MAX_LAYOUTS):
            self._tries[n] = tries + 1
            self._layouts[n] = _learn(data, tail, self._scalar_head)
        return tail


def _learn(data: bytes, tail: Any, scalar_head: Callable[[bytes], Any]) -> _Layout | None:
    """The layout of ``data``, a tail that unpacked as ``tail``; None when it is not a flat
    ``[value, {str: value}]`` of plain values and NumPy scalars in little-endian order."""
    if not (isinstance(tail, list) and len(tail) == 2 and isinstance(tail[1], dict)):
        return None
    values = [tail[0], *tail[1].values()]
    keys = tuple(tail[1])
    if not all(isinstance(k, str) for k in keys):
        return None
    if not all(isinstance(v, _PLAIN) or (isinstance(v, np.generic) and v.shape == ()) for v in values):
        return None
    reader = _Reader(data, scalar_head)
    try:
        reader.expect(0x92)
        spans = [reader.value()]
        count = reader.map_header()
        if count != len(keys):
            return None
        for _ in range(count):
            reader.string()
            spans.append(reader.value())
    except (IndexError, ValueError):
        return None
    if reader.pos != len(data):
        return None
    fmt, fixed_at, plan, nans, item, last = ["<"], [], [], [], 0, 0
    runs, slots = [], []  # the spec's
    for (at, code, typ, dt), v in zip(spans, values):
        if code is None:  # a plain value: its bytes stay in the fixed run
            if not isinstance(v, _PLAIN):
                return None
            plan.append((-1, v))
            slots.append((-1, "", v))
            continue
        if at > last:
            fmt.append(f"{at - last}s")
            fixed_at.append(item)
            runs.append((last, data[last:at]))
            item += 1
        fmt.append(code)
        if code in _NAN_CODES:
            nans.append((len(plan), at, dt))
        plan.append((item, typ))
        slots.append((at, code, typ))
        item += 1
        last = at + struct.calcsize("<" + code)
    # (plain values only, CartPole's [1.0, {}] say, make a layout too: unpacking them is as quick
    # here, but the compiled slab step reads them without calling into Python)
    if len(data) > last:
        fmt.append(f"{len(data) - last}s")
        fixed_at.append(item)
        runs.append((last, data[last:]))
    spec = None if any(code == "e" for _, code, _ in slots) else (runs, slots, keys)
    return _Layout("".join(fmt), fixed_at, plan, keys, nans, data, spec)


class _Reader:
    """Walks the MessagePack a tail is made of. ``value`` gives a NumPy scalar's value offset,
    struct code, type and dtype, or (end, None, None, None) for anything else that is one
    self-contained value."""

    def __init__(self, data: bytes, scalar_head: Callable[[bytes], Any]):
        self.data, self.pos, self.scalar_head = data, 0, scalar_head

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise IndexError
        self.pos += n

    def uint(self, n: int) -> int:
        v = int.from_bytes(self.data[self.pos:self.pos + n], "big")
        self.skip(n)
        return v

    def expect(self, b: int) -> None:
        if self.byte() != b:
            raise ValueError

    def map_header(self) -> int:
        b = self.byte()
        if 0x80 <= b <= 0x8F:
            return b & 0x0F
        if b == 0xDE:
            return self.uint(2)
        raise ValueError

    def string(self) -> None:
        b = self.byte()
        if 0xA0 <= b <= 0xBF:
            self.skip(b & 0x1F)
        elif b in (0xD9, 0xDA):
            self.skip(self.uint(1 if b == 0xD9 else 2))
        else:
            raise ValueError

    def value(self) -> tuple[int, str | None, Any, Any]:
        b = self.data[self.pos]
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            self.skip(1)
        elif b in _FIXED_WIDTH:
            self.skip(1 + _FIXED_WIDTH[b])
        elif 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA):
            self.string()
        elif b in _FIXEXT or b in (0xC7, 0xC8):
            self.skip(1)
            size = _FIXEXT[b] if b in _FIXEXT else self.uint(1 if b == 0xC7 else 2)
            kind = self.byte()
            start = self.pos
            self.skip(size)
            return self._scalar(kind, start, size)
        else:
            raise ValueError
        return self.pos, None, None, None

    def _scalar(self, kind: int, start: int, size: int) -> tuple[int, str, Any, Any]:
        found = self.scalar_head(self.data[start:start + size]) if kind == 1 else None
        if found is None:
            raise ValueError
        k, (_, code, typ, dt) = found
        if code is None or dt.byteorder == ">":
            raise ValueError
        return start + k, code, typ, dt


_FIXED_WIDTH = {0xCC: 1, 0xD0: 1, 0xCD: 2, 0xD1: 2, 0xCE: 4, 0xD2: 4, 0xCA: 4, 0xCF: 8, 0xD3: 8, 0xCB: 8}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
