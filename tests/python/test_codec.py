"""The Python codec's ndarray extension: the fast path writes the same bytes msgpack would, for
scalars and arrays of every kind and around the bin8/bin16/bin32 size boundaries, and round-trips."""
import msgpack
import numpy as np
import pytest

from gymfarm import codec
from raw_reply import BROKEN_LAYOUTS, RAW_OBSERVATIONS, raw_reply, same, tails_of_one_shape, worker_tail


@pytest.mark.parametrize("value", [
    np.int64(-3), np.uint8(200), np.float32(0.25), np.bool_(True),  # (np.float64 is a float: packed as one)
    np.zeros((0,), np.float32), np.arange(12, dtype=np.int16).reshape(3, 4),
    np.ones(255, np.uint8), np.ones(256, np.uint8), np.ones(65535, np.uint8), np.ones(65536, np.uint8),
    np.arange(6, dtype=">i4"), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
])
def test_ndarray_extension_bytes_and_round_trip(value):
    packed = codec.pack({"action": value})
    a = np.asarray(value).astype(np.asarray(value).dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a) if a.ndim else a  # (ascontiguousarray would make a 0-d array 1-d)
    want = msgpack.packb({"action": msgpack.ExtType(codec.NDARRAY_EXT, msgpack.packb(
        [a.dtype.str, list(a.shape), a.tobytes()], use_bin_type=True))}, use_bin_type=True)
    assert packed == want
    back = codec.unpack(packed)["action"]
    assert np.array_equal(back, value)
    assert np.asarray(back).dtype == a.dtype


def test_objects_numpy_cannot_send_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        codec.pack({"x": np.array(["a"])})
    with pytest.raises(TypeError, match="object"):
        codec.pack({"x": object()})


@pytest.mark.parametrize("action", [np.int64(3), np.uint8(7), np.bool_(True), np.float64(0.25), np.float32(-1),
                                    np.float16(2), np.int32(-5)])
@pytest.mark.parametrize("fields", [{}, {"autoreset": "next_step"}, {"autoreset": None}])
def test_a_numpy_scalar_action_travels_as_one(action, fields):
    """A Discrete action that is a NumPy integer reaches the env as that NumPy integer, as in
    process (np.float64 too, which msgpack alone would write as a float)."""
    body = {**fields, "action": action}
    want = msgpack.packb({**fields, "action": codec._ndarray_ext(action)}, use_bin_type=True)
    for _ in range(2):  # the first call learns the head
        assert codec.pack_body(body) == want
    back = codec.unpack(codec.pack_body(body))["action"]
    assert type(back) is type(action) and back.tobytes() == action.tobytes()


def _scalar_payload(value, order):
    """A NumPy scalar's extension as the worker writes it, in the given byte order."""
    dt = value.dtype.newbyteorder(order) if value.dtype.itemsize > 1 else value.dtype
    raw = np.asarray(value).astype(dt).tobytes()
    return msgpack.packb(msgpack.ExtType(codec.NDARRAY_EXT, msgpack.packb([dt.str, [], raw], use_bin_type=True)))


@pytest.mark.parametrize("value", [
    np.float64(0.3), np.float64(-0.0), np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf0\x7f", "<f8")[0],  # a NaN payload
    np.float32(-0.08), np.frombuffer(b"\x01\x00\x80\x7f", "<f4")[0], np.float16(2), np.bool_(False),
    np.int8(-3), np.uint8(200), np.int16(-5), np.uint32(4_000_000_000), np.int64(-1), np.uint64(2**64 - 1),
])
@pytest.mark.parametrize("order", ["<", ">"])
def test_a_scalar_read_from_its_cached_head_is_the_one_unpacked_the_long_way(value, order):
    data = _scalar_payload(value, order)
    codec._SCALAR_HEADS.clear()
    slow = codec.unpack(data)  # unpacked as a nested message, and its head learned
    assert len(codec._SCALAR_HEADS) == 1
    fast = codec.unpack(data)
    assert type(fast) is type(slow) is type(value)
    assert np.asarray(fast).tobytes() == np.asarray(slow).tobytes() == np.asarray(value).tobytes()
    # a payload with a byte after the value is refused as before, not read from the head
    longer = msgpack.packb(msgpack.ExtType(codec.NDARRAY_EXT, msgpack.unpackb(data).data + b"\0"))
    with pytest.raises(msgpack.ExtraData):
        codec.unpack(longer)


@pytest.mark.parametrize("action", [
    np.arange(6, dtype=np.float32), np.arange(6.0).reshape(2, 3), np.ones(300, np.uint8), np.array([True, False]),
    np.zeros(0), np.arange(6.0)[::2], np.arange(3, dtype=">f8"), np.asfortranarray(np.ones((2, 2))),
    np.float32(3), np.array(2.0), 4, [1, 2], np.array(["a"], dtype=object)[:0],
])
def test_a_step_body_packed_from_a_cached_head_is_packs_bytes(action):
    for _ in range(2):  # the first call learns the head
        try:
            want = codec.pack({"action": action})
        except TypeError:
            with pytest.raises(TypeError):
                codec.pack_body({"action": action})
            return
        assert codec.pack_body({"action": action}) == want
    assert codec.pack_body({"action": np.zeros(2), "extra": 1}) == codec.pack({"action": np.zeros(2), "extra": 1})


@pytest.mark.parametrize("obs", RAW_OBSERVATIONS)
def test_a_raw_step_reply_decodes_as_its_messagepack_body(obs):
    reward, info = np.float64(0.5), {"x": np.float64(1.5), "n": 2}
    buf, n = raw_reply(obs, reward, info, term=1)
    got = codec.unpack_raw_step(buf, 8, n)
    want = codec.unpack(codec.pack({"obs": obs, "reward": reward, "terminated": True, "truncated": False,
                                    "info": info}))
    assert list(got) == list(want)
    assert got["obs"].dtype == want["obs"].dtype and got["obs"].shape == want["obs"].shape
    assert got["obs"].tobytes() == want["obs"].tobytes() and got["obs"].flags.writeable
    assert type(got["reward"]) is type(want["reward"]) and got["reward"] == want["reward"]
    assert got["terminated"] is True and got["truncated"] is False and got["info"] == want["info"]


# the broken layouts, and a tail that is not [reward, info]
@pytest.mark.parametrize("change", [*BROKEN_LAYOUTS, {"tail": codec.pack({"reward": 1.0})}])
def test_a_raw_step_reply_that_does_not_hold_together_is_refused(change):
    buf, n = raw_reply(np.arange(4, dtype=np.float32), **change)
    with pytest.raises(ValueError):
        codec.unpack_raw_step(buf, 8, n)
    with pytest.raises(ValueError):
        codec.unpack_raw_step(buf, 8, 20)  # shorter than the head


@pytest.mark.parametrize("seed", [0, 1])
def test_a_tail_read_from_its_learned_layout_is_the_one_unpacked_the_long_way(seed):
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    read = 0
    for reward, info in tails_of_one_shape(seed):
        data = worker_tail(reward, info)
        buf = b"\0" * 5 + data + b"\xff" * 3  # at an offset, with bytes after it
        want = codec.unpack(data)
        got = layouts.decode(buf, 5, len(data))
        assert same(got, want), (got, want)
        read += layouts._layouts.get(len(data)) is not None
    assert read > 30  # most came from a layout, not the long way


def test_tails_a_layout_cannot_take_are_unpacked():
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    for reward, info in [(np.float64(1), {"a": [np.float64(1)]}), (np.float64(1), {1: np.float64(2)}),
                         (np.float64(1), {"a": np.arange(3.0)}), (np.float64(1), {"a": 2**70}),
                         (np.float64(1), {"a": b"xy"}), ({"r": 1}, {}), (np.float64(2), 3)]:
        data = worker_tail(reward, info)
        for _ in range(3):
            assert same(layouts.decode(data, 0, len(data)), codec.unpack(data))
        assert layouts._layouts.get(len(data)) is None


def test_a_tail_of_plain_values_has_a_layout_too():
    """CartPole's [1.0, {}]: nothing but fixed bytes, read as unpacking reads them (the compiled slab
    step then reads it without calling into Python)."""
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    for reward, info in [(1.0, {}), (0.0, {"lives": 3, "label": "x", "flag": True, "none": None})]:
        data = worker_tail(reward, info)
        for _ in range(3):
            assert same(layouts.decode(data, 0, len(data)), codec.unpack(data))
        lay = layouts.layout(len(data))
        assert lay is not None and lay.spec == ([(0, data)], [(-1, "", v) for v in [reward, *info.values()]],
                                                tuple(info))


def test_a_tail_length_whose_fixed_bytes_keep_changing_stops_being_learned():
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    for t in range(40):  # Pong's info: ints that change every step
        data = worker_tail(np.float64(t), {"frame": 100 + t})
        assert same(layouts.decode(data, 0, len(data)), codec.unpack(data))
    assert layouts._tries[len(data)] == codec.tails._MAX_TRIES


def test_a_tail_written_over_after_its_layout_was_learned_is_unpacked_or_refused():
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    data = worker_tail(np.float64(1), {"x": np.float64(2), "y": np.float32(3)})
    layouts.decode(data, 0, len(data))
    for i in range(len(data)):  # every byte changed in turn: the long way's answer, or its error
        bad = bytearray(data)
        bad[i] ^= 0x5A
        try:
            want = codec.unpack(bytes(bad))
        except Exception as e:
            with pytest.raises(type(e)):
                layouts.decode(bytes(bad), 0, len(bad))
            continue
        assert same(layouts.decode(bytes(bad), 0, len(bad)), want)


def test_subclasses_and_containers_travel_as_their_base_types_and_numpy_floats_as_numpy():
    import collections
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    value = {"f": np.float64(0.5), "e": Level.HIGH, "o": collections.OrderedDict(a=1), "t": (1, (2, 3)),
             "s": Name("x"), "big": 2**70, "neg": -2**70, "ba": bytearray(b"c"), "set": {7}, "b": True, "n": None}
    back = codec.unpack(codec.pack(value))
    assert type(back["f"]) is np.float64 and back["f"] == 0.5
    assert type(back["e"]) is int and back["e"] == 3
    assert back["o"] == {"a": 1} and back["t"] == [1, [2, 3]] and back["set"] == [7]
    assert type(back["s"]) is str and back["s"] == "x"
    assert back["big"] == 2**70 and back["neg"] == -2**70 and back["ba"] == b"c"
    assert back["b"] is True and back["n"] is None
    with pytest.raises(TypeError, match="object"):
        codec.pack({"x": object()})
