"""The compiled slab step (gymfarm._slab_port, python/ext) against a slab made here, with this test
as the worker: it posts as slab.py's Python posts, reads raw replies as codec.unpack_raw_step reads
them (the same values and bits, the same refusals), refuses what is not a sealed slab, and waits
as slab.py's wait does. The farm's own runs of both paths are tests/python/test_shm.py's."""
import fcntl
import os
import struct
import threading
import time

import msgpack
import numpy as np
import pytest

from gymfarm import codec, slab
from raw_reply import BROKEN_LAYOUTS, RAW_OBSERVATIONS, raw_reply, same, tails_of_one_shape, worker_tail

port_mod = slab._slab_port
pytestmark = pytest.mark.skipif(port_mod is None and bool(os.environ.get("GYMFARM_PURE_SLAB")),
                                reason="GYMFARM_PURE_SLAB=1: the compiled step is off")

SIZE = 512 * 1024
REQ_OFF, REQ_CAP = 256, (SIZE - 256) // 4 // 64 * 64
REP_OFF, REP_CAP = REQ_OFF + REQ_CAP, SIZE - 256 - REQ_CAP


def test_a_default_build_has_the_compiled_step():
    assert port_mod is not None, "scripts/build puts gymfarm._slab_port beside the package's modules"


def make_slab(sealed=True):
    """(memfd, doorbell, mmap) of a slab laid out as shm::Slab::create lays one out, attached."""
    import mmap

    fd = os.memfd_create("gymfarm-slab", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, SIZE)
    if sealed:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    mm = mmap.mmap(fd, SIZE)
    struct.pack_into("=IIQIIII", mm, 0, slab.MAGIC, slab.VERSION, SIZE, REQ_OFF, REQ_CAP, REP_OFF, REP_CAP)
    struct.pack_into("=I", mm, 140, slab.ATTACHED)
    return fd, os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK), mm


@pytest.fixture
def fake():
    fd, bell, mm = make_slab()
    port = port_mod.Port(fd, bell, codec.raw_desc)
    yield port, mm, bell
    del port
    os.close(fd)
    os.close(bell)
    mm.close()


def word(mm, at):
    return struct.unpack_from("=I", mm, at)[0]


def answer(mm, seq, status, body, step_ns=0):
    """The worker's side: the reply, its status and length, the recent time, done_seq last."""
    mm[REP_OFF:REP_OFF + len(body)] = body
    struct.pack_into("=III", mm, 132, status, len(body), 1)  # rep_status, rep_len, state attached
    struct.pack_into("=Q", mm, 144, step_ns)
    struct.pack_into("=I", mm, 128, seq)


def test_a_post_writes_the_request_and_rings_a_sleeping_worker(fake):
    port, mm, bell = fake
    assert port.post(slab.STEP_RAW, b"\x81\xa6action\x01", True) and port.seq == 1
    assert mm[REQ_OFF:REQ_OFF + 9] == b"\x81\xa6action\x01"
    assert [word(mm, at) for at in (64, 68, 72, 80)] == [1, slab.STEP_RAW, 9, 1]
    with pytest.raises(BlockingIOError):  # the worker was not asleep: not rung
        os.eventfd_read(bell)
    struct.pack_into("=I", mm, 192, 1)  # worker_sleeping
    assert port.post(slab.RESET, b"\x80", False) and port.seq == 2
    assert [word(mm, at) for at in (64, 68, 72, 80)] == [2, slab.RESET, 1, 0]
    assert os.eventfd_read(bell) == 1
    assert not port.post(slab.STEP_RAW, bytes(REQ_CAP + 1), True) and port.seq == 2  # does not fit


@pytest.mark.parametrize("obs", [*RAW_OBSERVATIONS, np.array([np.nan, -0.0], np.float16)])
def test_a_raw_reply_reads_as_the_python_path_reads_it(fake, obs):
    port, mm, _ = fake
    reward, info = np.float32(np.nan), {"x": np.float64(1.5), "n": 2}
    buf, n = raw_reply(obs, reward, info, term=1)
    assert port.post(slab.STEP_RAW, b"\x80", True)
    answer(mm, port.seq, slab.OK_RAW, buf[8:8 + n])
    assert port.spin(1e-3) == 2
    got, want = port.read_raw(), codec.unpack_raw_step(buf, 8, n)
    o, term, trunc, at, tl = got
    assert (term, trunc) == (True, False)
    assert type(o) is np.ndarray and o.dtype == want["obs"].dtype and o.shape == want["obs"].shape
    assert o.tobytes() == want["obs"].tobytes() and o.flags.writeable and o.flags.c_contiguous and o.flags.owndata
    r, i = codec.raw_tail(mm, REP_OFF + at, tl)
    assert type(r) is np.float32 and np.isnan(r) and r.tobytes() == want["reward"].tobytes()
    assert i == want["info"] and type(i["x"]) is np.float64
    o[...] = 0  # the client's own array: the slab keeps its bytes
    assert port.read_raw()[0].tobytes() == obs.tobytes()


def step_raw(port, mm, tail):
    """One raw reply with this tail, read by the port."""
    buf, n = raw_reply(np.arange(3, dtype=np.float32), tail=tail)
    assert port.post(slab.STEP_RAW, b"\x80", True)
    answer(mm, port.seq, slab.OK_RAW, buf[8:8 + n])
    return port.read_raw()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_tail_read_from_a_taught_layout_is_the_one_unpacked_the_long_way(fake, seed):
    """slab.py teaches the port the layout tails.py learned for a tail length; the port then reads
    such tails itself, and leaves to tails.py one whose fixed bytes differ or whose float32 is a
    NaN (whose payload tails.py keeps)."""
    port, mm, _ = fake
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    taught, native = {}, 0
    for reward, info in tails_of_one_shape(seed):
        info.pop("f16")  # a layout with a float16 is never taught (the next test)
        data = worker_tail(reward, info)
        got = step_raw(port, mm, data)
        if got.__class__ is tuple:
            native += 1
            tail = [got[1], got[4]]
            assert got[2:4] == (False, False)
        else:
            assert got.__class__ is list and got[4] == len(data)
            tail = layouts.decode(mm, REP_OFF + got[3], got[4])
            lay = layouts.layout(len(data))
            if taught.get(len(data)) is not lay:
                port.learn_tail(len(data), lay.spec if lay is not None else None)
                taught[len(data)] = lay
        assert same(tail, codec.unpack(data)), (tail, codec.unpack(data))
    assert native > 20  # most were read by the port


def test_a_layout_with_float16s_is_not_taught_and_a_forgotten_one_is_not_used(fake):
    port, mm, _ = fake
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    half = worker_tail(np.float64(1), {"h": np.float16(0.5)})
    for _ in range(2):
        layouts.decode(half, 0, len(half))
    assert layouts.layout(len(half)) is not None and layouts.layout(len(half)).spec is None
    data = worker_tail(np.float64(1), {"x": np.float64(2), "y": np.float32(3)})
    layouts.decode(data, 0, len(data))
    port.learn_tail(len(data), layouts.layout(len(data)).spec)
    got = step_raw(port, mm, data)
    assert got.__class__ is tuple and same([got[1], got[4]], codec.unpack(data))
    port.learn_tail(len(data), None)
    assert step_raw(port, mm, data).__class__ is list


def test_a_tail_written_over_after_its_layout_was_taught_is_left_to_python(fake):
    port, mm, _ = fake
    layouts = codec.tails.Tails(codec.unpack, codec.scalar_head)
    data = worker_tail(np.float64(1), {"x": np.float64(2), "y": np.float32(3), "s": "same"})
    layouts.decode(data, 0, len(data))
    port.learn_tail(len(data), layouts.layout(len(data)).spec)
    for i in range(len(data)):  # every byte changed in turn: read by the port only where a value changed
        bad = bytearray(data)
        bad[i] ^= 0x5A
        got = step_raw(port, mm, bytes(bad))
        if got.__class__ is tuple:
            assert same([got[1], got[4]], codec.unpack(bytes(bad)))


def refused_by_both(port, mm, buf, n):
    """The raw reply at buf[8:8 + n] raises ValueError on the Python path and from the port."""
    with pytest.raises(ValueError):
        codec.unpack_raw_step(buf, 8, n)
    assert port.post(slab.STEP_RAW, b"\x80", True)
    answer(mm, port.seq, slab.OK_RAW, buf[8:8 + n])
    with pytest.raises(ValueError):
        port.read_raw()


@pytest.mark.parametrize("change", BROKEN_LAYOUTS)
def test_a_raw_reply_that_does_not_hold_together_is_refused_as_the_python_path_refuses_it(fake, change):
    port, mm, _ = fake
    buf, n = raw_reply(np.arange(4, dtype=np.float32), **change)
    refused_by_both(port, mm, buf, n)
    answer(mm, port.seq, slab.OK_RAW, buf[8:8 + 20])  # shorter than the head
    with pytest.raises(ValueError, match="of 20 bytes"):
        port.read_raw()


def test_lengths_that_wrap_around_32_bits_are_refused(fake):
    port, mm, _ = fake
    buf, n = raw_reply(np.arange(4, dtype=np.float32))
    body = bytearray(buf[8:8 + n])
    struct.pack_into("=II", body, 16, 0xFFFFFFF0, n + 0x10)  # obs_off + obs_len = n, modulo 2**32
    assert port.post(slab.STEP_RAW, b"\x80", True)
    answer(mm, port.seq, slab.OK_RAW, bytes(body))
    with pytest.raises(ValueError, match="do not add up"):
        port.read_raw()


def test_a_reply_that_is_not_raw_is_left_to_python(fake):
    port, mm, _ = fake
    for status in (slab.OK, slab.ERR, slab.SPILLED):
        assert port.post(slab.STEP_RAW, b"\x80", True)
        answer(mm, port.seq, status, codec.pack({"obs": 1}))
        assert port.read_raw() is None
    struct.pack_into("=II", mm, 132, slab.OK_RAW, REP_CAP + 1)  # longer than the reply area
    assert port.read_raw() is None
    struct.pack_into("=I", mm, 140, slab.DEAD)
    assert port.step(b"\x80", 1e-3, True) == 0 and port.seq == 3  # a dead slab: nothing posted


def test_a_step_whose_reply_does_not_come_within_the_spin_is_left_to_sleep(fake):
    port, mm, _ = fake
    t = time.perf_counter()
    assert port.step(b"\x80", 2e-3, True) == 1  # no worker: nothing came within 2 ms
    assert 2e-3 <= time.perf_counter() - t < 0.5
    struct.pack_into("=Q", mm, 144, 5_000_000)  # the worker's steps take 5 ms: longer than the spin
    t = time.perf_counter()
    assert port.spin(2e-3) == 0 and time.perf_counter() - t < 2e-3  # no spin at all: sleep at once


def test_a_reply_that_comes_while_the_port_dozes_is_taken(fake):
    """A step the worker's recent times say takes 20 ms: the port dozes (the GIL let go, so this
    process's other threads run; here the fake worker) until 150 us before its end, then spins."""
    port, mm, _ = fake
    struct.pack_into("=Q", mm, 144, 20_000_000)
    obs = np.arange(3, dtype=np.float32)
    buf, n = raw_reply(obs, 1.0, {})
    assert port.post(slab.STEP_RAW, b"\x80", True)
    worker = threading.Timer(0.005, answer, (mm, port.seq, slab.OK_RAW, buf[8:8 + n], 20_000_000))
    worker.start()
    assert port.spin(0.1) == 1
    worker.join()
    assert port.read_raw()[0].tobytes() == obs.tobytes()


def test_what_is_not_a_sealed_slab_is_refused():
    fd, bell, mm = make_slab(sealed=False)  # a holder could shrink it under a reader
    try:
        with pytest.raises(ValueError):
            port_mod.Port(fd, bell, codec.raw_desc)
        struct.pack_into("=I", mm, 0, 0xDEADBEEF)
        with pytest.raises(ValueError):
            port_mod.Port(fd, bell, codec.raw_desc)
    finally:
        mm.close()
        os.close(fd)
        os.close(bell)


def test_the_port_keeps_its_own_mapping_and_doorbell():
    """Once made, the port needs nothing the Python side holds: the memfd, the doorbell and the
    Python mapping can all be closed."""
    fd, bell, mm = make_slab()
    port = port_mod.Port(fd, bell, codec.raw_desc)
    os.close(fd)
    os.close(bell)
    struct.pack_into("=I", mm, 192, 1)  # the worker sleeps: the port rings its own copy
    mm.close()
    assert port.post(slab.STEP_RAW, b"\x80", True) and port.seq == 1


@pytest.mark.parametrize("action", [
    np.array([0.5, -0.25, 1.0], np.float32), np.arange(6, dtype=np.int64).reshape(2, 3), np.array([True, False]),
    np.int64(3), np.float64(0.5), np.bool_(True), np.float16(1.5), np.uint8(7)])
def test_an_action_is_written_as_pack_body_writes_it(fake, action):
    """The port writes a step's body {"action": a} itself, from the head codec.action_head gave for
    the action's type, format and shape: the bytes pack_body writes."""
    port, mm, _ = fake
    assert port.step_action(action, 0.0, True) == 3  # nothing taught: packed by slab.py
    port.learn_head(action, codec.action_head(action))
    for _ in range(2):
        assert port.step_action(action, 0.0, True) == 1  # posted; no worker here to answer it
        want = codec.pack_body({"action": action})
        assert word(mm, 72) == len(want) and mm[REQ_OFF:REQ_OFF + len(want)] == want
        assert word(mm, 68) == slab.STEP_RAW and word(mm, 64) == port.seq
    other = np.zeros((4, 3), np.int64) if isinstance(action, np.ndarray) else np.float32(1)
    assert port.step_action(other, 0.0, True) == 3  # another shape or type: its own head


def test_an_action_without_a_head_is_left_to_python(fake):
    port, mm, _ = fake
    for action in (np.arange(3.0).astype(">f8"), np.zeros(0, np.float32)):  # big-endian; empty
        assert codec.action_head(action) is None
        port.learn_head(action, None)
        assert port.step_action(action, 0.0, True) == 4 and port.seq == 0
    strided = np.arange(8.0)[::2]  # not C-ordered: no buffer the port takes
    assert port.step_action(strided, 0.0, True) == 4 and port.seq == 0
    big = np.zeros(REQ_CAP, np.float32)  # larger than the request area: not posted
    port.learn_head(big, codec.action_head(big))
    assert port.step_action(big, 0.0, True) == 0 and port.seq == 0


# Descriptors whose numbers do not fit C++ integers: a dimension of 2**63 or more (with another 0,
# so the array is empty), or more than 2**64 bytes
HUGE_DESCS = [msgpack.packb(["<f4", [0, 2**63]]), msgpack.packb(["<f4", [0, 2**64 - 1]]),
              msgpack.packb(["<f4", [2**32, 2**32]]), msgpack.packb(["<f4", [2**62]]),
              msgpack.packb(["<f4", [0, 2**40, 2**40]])]


@pytest.mark.parametrize("desc", [*HUGE_DESCS, msgpack.packb(["<f4", [True, 4]])])  # and a bool for a dimension
def test_a_descriptor_no_slab_could_hold_is_refused_by_both_paths(fake, desc):
    port, mm, _ = fake
    for ln in (0, 16):
        refused_by_both(port, mm, *raw_reply(np.arange(4, dtype=np.float32), desc=desc, ln=ln))


def slab_of(fd, bell):
    """A Slab over a slab made here (slab.py's own object, with its port)."""
    return slab.Slab(slab.SlabFds(os.dup(fd), os.dup(bell)), 1e-3)


def test_slab_py_turns_a_refused_reply_into_a_slab_error():
    """What the port refuses reaches the client as SlabError (the client then drops the slab and
    goes over the socket), never as another exception."""
    fd, bell, mm = make_slab()
    s = slab_of(fd, bell)
    try:
        buf, n = raw_reply(np.arange(4, dtype=np.float32), desc=HUGE_DESCS[0], ln=0)
        assert s.post(slab.STEP_RAW, b"\x80")
        answer(mm, s._port.seq, slab.OK_RAW, buf[8:8 + n])
        with pytest.raises(slab.SlabError):
            s.wait(1.0, lambda: None)
    finally:
        s.close()
        mm.close()
        os.close(fd)
        os.close(bell)


def test_a_reply_not_laid_out_raw_is_counted_ready_once():
    """A step whose reply is the MessagePack body (a Tuple observation, say), there as soon as the
    step was posted: one wait that found it ready, as the Python path counts it."""
    fd, bell, mm = make_slab()
    s = slab_of(fd, bell)
    try:
        answer(mm, s._port.seq + 1, slab.OK, codec.pack({"obs": [1, 2], "reward": 1.0, "terminated": False,
                                                          "truncated": False, "info": {}}))
        assert s.step(b"\x80") is True  # posted; not raw: slab.py's wait reads it
        assert s.wait(1.0, lambda: None)[0] == slab.OK and s.ready == 1
    finally:
        s.close()
        mm.close()
        os.close(fd)
        os.close(bell)
