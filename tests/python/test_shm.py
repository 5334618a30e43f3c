"""The shared-memory data plane (docs/protocol.md "Shared memory"): a local client's step and
reset travel through the instance's slab, without the broker, and give exactly what the socket
path and an in-process env give: the same episodes bit for bit, the same errors, replies too large
for the slab, requests too large for it, and a farm with slabs off."""
import os
import pickle
import time

import ale_py
import gymnasium as gym
import numpy as np
import pytest

import gymfarm
import gymfarm_testenvs  # noqa: F401  (the gymfarm_test/ envs, in process too)
from farm_fixture import wait_until
from gymfarm import slab
from trees import assert_same

gym.register_envs(ale_py)

FAULTY = "gymfarm_test/Faulty-v0"


def trajectory(env, seed, steps, actions):
    """Everything the env returns over ``steps`` steps from reset(seed)."""
    out = [env.reset(seed=seed)]
    for i in range(steps):
        r = env.step(actions[i])
        out.append(r)
        if r[2] or r[3]:
            out.append(env.reset())
    return out


def episodes(env, seed, steps, actions):
    """The trajectory pickled: equal bytes are equal values, dtypes and types, bit for bit."""
    return pickle.dumps(trajectory(env, seed, steps, actions))


def actions_for(space, n, seed=0):
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def test_a_local_make_gets_a_slab_and_its_steps_skip_the_broker(start_farm):
    fp = start_farm(workers=1)
    farm = fp.connect()
    env = farm.make("CartPole-v1")
    assert farm.is_local and env._slab is not None and env._slab.usable
    env.reset(seed=0)
    before = farm.stats()
    for i in range(200):
        _, _, term, trunc, _ = env.step(i % 2)
        if term or trunc:
            env.reset()
    after = farm.stats()
    # stats itself is the one request between the two reads: the 200 steps never reached the broker
    assert after["requests"] - before["requests"] == 1, (before["requests"], after["requests"])
    # ...which still counts them (its scan of the slabs, every 10 ms)
    assert wait_until(lambda: farm.stats()["env_steps"] >= before["env_steps"] + 200, 5)
    worker = next(w for w in farm.stats()["workers"] if w["instance"] == env.instance_id)
    assert worker["steps"] >= 200
    env.close()


@pytest.mark.parametrize("env_id, steps", [
    ("CartPole-v1", 300),
    ("gymfarm_test/DictObs-v0", 60),
    ("gymfarm_test/TupleObs-v0", 60),
    ("gymfarm_test/BigInfo-v0", 20),
    ("ALE/Pong-v5", 120),
    ("HalfCheetah-v5", 150),
    ("gymfarm_test/InfoKinds-v0", 90),
])
def test_the_same_episodes_bit_for_bit_on_shm_socket_and_in_process(start_farm, env_id, steps, slab_step):
    fp = start_farm(workers=2)
    shm, sock = fp.connect(), fp.connect(shm=False)
    a, b = shm.make(env_id), sock.make(env_id)
    assert a._slab is not None and b._slab is None
    assert (a._slab._port is not None) == (slab_step == "compiled")
    local = gym.make(env_id)
    acts = actions_for(local.action_space, steps)
    if env_id.endswith("BigInfo-v0"):
        acts = [0, 2] * (steps // 2)  # ints beyond 64 bits, and none (action 1 cannot travel)
    got_shm, got_sock, got_local = (trajectory(e, 7, steps, acts) for e in (a, b, local))
    # one codec, two paths: the same bytes, step by step (a tail read from its learned layout shares
    # its plain values, a str say, between steps as the env's own constants are shared in process;
    # one pickle of the whole trajectory would tell shared objects from equal ones)
    assert [pickle.dumps(r) for r in got_shm] == [pickle.dumps(r) for r in got_sock]
    assert_same(tuple(got_shm), tuple(got_local))  # and what the env gives in process
    # an array observation came laid out raw, straight from the env's array (shm/slab.hpp)
    raw = env_id in ("CartPole-v1", "ALE/Pong-v5", "HalfCheetah-v5", "gymfarm_test/BigInfo-v0",
                     "gymfarm_test/InfoKinds-v0")
    assert (a._slab.raw_replies >= steps) if raw else (a._slab.raw_replies == 0), a._slab.raw_replies
    local.close()
    a.close()
    b.close()


@pytest.mark.parametrize("kind", ["zero_d", "strided", "big_endian", "subclass", "bool", "empty", "int64_3d",
                                  "scalar", "fortran", "float16"])
def test_every_form_of_observation_is_the_socket_paths_on_the_raw_step(start_farm, kind, slab_step):
    """Arrays the raw layout takes (C-ordered arrays of numbers, subclasses, empty ones) and those it
    leaves to MessagePack (0-d, strided, Fortran-ordered, big-endian, NumPy scalars) arrive as the
    socket path and the env in process give them."""
    fp = start_farm(workers=2)
    shm, sock = fp.connect(), fp.connect(shm=False)
    a, b = shm.make("gymfarm_test/ObsKinds-v0", kind=kind), sock.make("gymfarm_test/ObsKinds-v0", kind=kind)
    local = gym.make("gymfarm_test/ObsKinds-v0", kind=kind)
    acts = [0, 1] * 8
    got_shm, got_sock, got_local = (trajectory(e, 1, 16, acts) for e in (a, b, local))
    assert [pickle.dumps(r) for r in got_shm] == [pickle.dumps(r) for r in got_sock]
    # on either path a 0-d array arrives as a NumPy scalar, a big-endian one little-endian (docs/protocol.md)
    if kind not in ("zero_d", "big_endian"):
        assert_same(tuple(got_shm), tuple(got_local))
    obs = got_shm[1][0]
    assert type(obs) is type(got_sock[1][0]) and obs.dtype == got_sock[1][0].dtype
    if isinstance(obs, np.ndarray):
        assert obs.flags.writeable and obs.flags.c_contiguous
    raw = kind in ("subclass", "bool", "empty", "int64_3d", "float16")
    # (a first step whose observation is outside the space warns: that reply goes through host.py)
    assert (a._slab.raw_replies >= 15) if raw else (a._slab.raw_replies == 0), a._slab.raw_replies
    for e in (a, b, local):
        e.close()


def test_an_observation_returned_is_the_clients_own(start_farm):
    """The next step overwrites the slab, not the arrays the client already has."""
    fp = start_farm(workers=1)
    env = fp.connect().make("CartPole-v1")
    first, _ = env.reset(seed=0)
    kept = [env.step(i % 2)[0] for i in range(5)]
    copies = [k.copy() for k in kept]
    for i in range(5):
        env.step(i % 2)
    assert all(np.array_equal(k, c) for k, c in zip(kept, copies, strict=True))
    assert env._slab.raw_replies == 10
    kept[0][0] = 99.0  # writable, as in process
    env.close()


def spin_or_sleep(env, steps):
    """For each step: (the worker's recent time per request before it, its latency, whether the
    client slept on done_seq for it, whether the reply was there before the client waited for it:
    a client descheduled right after its request, as on a loaded machine)."""
    out, shared = [], env._slab
    env.reset(seed=0)
    for i in range(steps):
        recent, sleeps, ready = shared._q[slab.STEP_NS_Q] / 1e9, shared.sleeps, shared.ready
        t = time.perf_counter()
        env.step(i % 2)
        out.append((recent, time.perf_counter() - t, shared.sleeps > sleeps, shared.ready > ready))
    return out


def test_a_step_of_half_a_millisecond_is_awaited_spinning_unless_the_spin_is_shorter(start_farm, slab_step):
    """A sleeping client's wake-up costs tens of microseconds: by default a client spins on its
    slab while the worker's recent steps took under a millisecond (Heavy-v0: 0.5 ms), with
    spin_us=100 it sleeps, and a vector env with more envs than cores spins at most 200 us."""
    fp = start_farm(workers=2)
    for spin, expect in ((None, 1e-3), (100.0, 100e-6)):
        env = fp.connect(**({} if spin is None else {"spin_us": spin})).make("gymfarm_test/Heavy-v0")
        assert env._slab.spin == pytest.approx(expect)
        seen = spin_or_sleep(env, 60)
        env.close()
        # a step the worker's recent steps said was short, and that was answered within the spin,
        # was awaited spinning; one they said was longer than the spin was slept for
        assert not any(slept for recent, took, slept, _ in seen if recent < 0.9 * expect and took < 0.9 * expect)
        assert all(slept for recent, _, slept, ready in seen if recent >= expect and not ready), seen
        if spin is None:  # on a quiet machine, most of them were short
            assert sum(1 for recent, took, _, _ in seen if recent < 0.9e-3 and took < 0.9e-3) >= 20 or \
                os.getloadavg()[0] >= (os.cpu_count() or 1), seen
        else:
            assert sum(1 for recent, _, _, _ in seen if recent >= expect) >= 50, seen
            # on a quiet machine the client waited for most of them (and slept)
            assert sum(1 for _, _, slept, _ in seen if slept) >= 30 or \
                os.getloadavg()[0] >= (os.cpu_count() or 1), seen
    crowded = fp.connect().make_vec("CartPole-v1", max(2, os.cpu_count() or 1))
    assert all(s is not None and s.spin <= 200e-6 for s in crowded._slabs)
    crowded.close()


def test_errors_are_the_socket_paths_errors(start_farm, slab_step):
    fp = start_farm(workers=2)
    errs = []
    for conn in (fp.connect(), fp.connect(shm=False)):
        env = conn.make(FAULTY)
        env.reset(seed=0)
        with pytest.raises(gymfarm.EnvError) as e:
            env.step(1)  # raises in the env
        with pytest.raises(gymfarm.EnvError) as bad:
            env.reset(options={"raise": True})
        env.reset()
        obs, *_ = env.step(0)  # the instance survives
        errs.append((type(e.value), e.value.remote_type, e.value.remote_message, type(bad.value),
                     bad.value.remote_message, obs.tolist()))
        env.close()
        with pytest.raises(gymfarm.UnknownInstance):
            conn.call("step", env.instance_id, {"action": 0})
    assert errs[0] == errs[1]


def test_a_reply_too_large_for_the_slab_arrives_whole(start_farm, slab_step):
    fp = start_farm(workers=1)
    farm = fp.connect(timeout=60)
    env = farm.make(FAULTY)
    assert env._slab is not None
    env.reset(seed=0)
    obs, *_ = env.step(6)  # a 100 MB observation: the worker keeps it, the client fetches it
    assert obs.shape == (25_000_000,) and obs.dtype == np.float32 and not obs.any()
    obs, *_ = env.step(0)  # and the slab goes on serving
    assert obs.tolist() == [2.0]
    env.close()


def test_a_small_slab_spills_and_a_large_action_goes_over_the_socket(start_farm, slab_step):
    fp = start_farm(workers=2, args=["--shm-slab-kb", "64"])
    farm = fp.connect()
    pong = farm.make("ALE/Pong-v5")  # 100 KB frames: more than a 64 KB slab holds
    local = gym.make("ALE/Pong-v5")
    acts = actions_for(local.action_space, 30)
    assert_same(tuple(trajectory(pong, 3, 30, acts)), tuple(trajectory(local, 3, 30, acts)))
    echo = farm.make("gymfarm_test/ActionEcho-v0")
    assert echo._slab is not None
    echo.reset(seed=0)
    big = np.arange(20_000, dtype=np.float32)  # 80 KB: more than the request area
    _, _, _, _, info = echo.step(big)
    assert info["bytes"] == big.tobytes()
    _, _, _, _, info = echo.step(np.array([0.5, -0.5], dtype=np.float32))  # back through the slab
    assert info["bytes"] == np.array([0.5, -0.5], dtype=np.float32).tobytes()


def test_slabs_off(start_farm):
    fp = start_farm(workers=1, args=["--shm-slab-kb", "0"])
    farm = fp.connect()
    env = farm.make("CartPole-v1")
    assert farm.is_local and env._slab is None
    env.reset(seed=0)
    env.step(0)
    env.close()


def test_a_slab_size_below_the_minimum_is_refused(start_farm, tmp_path):
    import subprocess

    from farm_fixture import GYMFARM

    r = subprocess.run([str(GYMFARM), "start", "--shm-slab-kb", "10"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--shm-slab-kb" in r.stderr


def test_env_code_that_rewrites_the_slab_header_changes_nothing(start_farm):
    fp = start_farm(workers=1)
    farm = fp.connect()
    env = farm.make("gymfarm_test/SlabVandal-v0")
    assert env._slab is not None
    env.reset(seed=0)
    assert env.unwrapped.scribble_header() == 1  # a call over the socket; the env writes the header
    for t in range(1, 20):
        obs, reward, *_ = env.step(0)
        assert obs.tolist() == [t, 2 * t, 3 * t] and reward == t
    env.close()


def test_time_spent_stays_with_the_env(start_farm, slab_step):
    """A slow env's client sleeps on the slab rather than spinning: its CPU time stays small."""
    fp = start_farm(workers=1)
    farm = fp.connect()
    env = farm.make("gymfarm_test/Heavy-v0")
    env.reset(seed=0)
    for i in range(20):
        env.step(i % 2)
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(200):
        _, _, term, trunc, _ = env.step(i % 2)
        if term or trunc:
            env.reset()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    assert cpu < 0.5 * wall, (cpu, wall)  # each step burns 500 us in the worker, none here
    env.close()


def test_metrics_count_the_steps_and_requests_that_went_through_slabs(start_farm):
    import requests

    fp = start_farm(workers=1)
    farm = fp.connect()
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    for i in range(30):
        env.step(i % 2)  # 30 steps, one reset: 31 requests through the slab
    s = farm.stats()  # read at once: the broker looks at its slabs before it answers
    assert s["shm"] == {"slabs": 1, "answered": 31}
    assert s["env_steps"] == 30
    text = requests.get(f"{fp.rest_url.rstrip('/').rsplit('/v1', 1)[0]}/metrics", timeout=10).text
    assert "gymfarm_shm_requests_total 31" in text and "gymfarm_shm_slabs 1" in text
    assert "gymfarm_env_steps_total 30" in text
    env.close()
    assert wait_until(lambda: farm.stats()["shm"]["slabs"] == 0, 5)
