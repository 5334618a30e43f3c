"""The Python codec's ndarray extension: the fast path writes the same bytes msgpack would, for
scalars and arrays of every kind and around the bin8/bin16/bin32 size boundaries, and round-trips."""
import msgpack
import numpy as np
import pytest

from gymfarm import codec


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


def test_discrete_numpy_actions_travel_as_plain_ints():
    from gymnasium import spaces

    d = spaces.Discrete(4)
    out = codec.wire_action(d, np.int64(3))
    assert out == 3 and type(out) is int
    assert codec.pack({"action": out}) == codec.pack({"action": 3})
    for other in (np.bool_(True), 2.0, [1]):  # left as they are: the worker refuses them as before
        assert codec.wire_action(d, other) is other
    box = spaces.Box(-1.0, 1.0, shape=(2,))
    a = np.zeros(2, dtype=np.float32)
    assert codec.wire_action(box, a) is a
