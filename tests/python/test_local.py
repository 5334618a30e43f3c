"""The local socket (docs/protocol.md "Stream sockets"): clients on the farm's host move to it after
the hello, get the same answers as over ZeroMQ, and pass the same security checks."""
import os
import socket
import stat
import struct

import msgpack
import numpy as np
import pytest

import gymfarm
from farm_fixture import FarmProcess


@pytest.fixture(scope="module")
def farm_proc(tmp_path_factory):
    f = FarmProcess(tmp_path_factory.mktemp("local"), workers=3)
    yield f
    assert f.stop() == 0


def episode(farm, env_id, actions, seed=3):
    env = farm.make(env_id)
    out = [env.reset(seed=seed)[0]]
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        out.append((obs, reward, term, trunc))
    env.close()
    return out


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def test_clients_on_this_host_use_the_local_socket(farm_proc, monkeypatch):
    with farm_proc.connect() as farm:
        assert farm.is_local
        path = farm.server["local"]
        assert path.startswith(str(farm_proc.runtime_dir))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # only the farm's user
    with farm_proc.connect(local=False) as farm:
        assert not farm.is_local
    monkeypatch.setenv("GYMFARM_LOCAL", "0")
    with farm_proc.connect() as farm:
        assert not farm.is_local


@pytest.mark.parametrize("env_id", ["CartPole-v1", "gymfarm_test/DictObs-v0", "gymfarm_test/TupleObs-v0"])
def test_local_and_zeromq_give_the_same_episode(farm_proc, env_id):
    with farm_proc.connect() as local, farm_proc.connect(local=False) as remote:
        assert local.is_local and not remote.is_local
        env = local.make(env_id)
        actions = [env.action_space.sample() for _ in range(30)]
        env.close()
        assert same(episode(local, env_id, actions), episode(remote, env_id, actions))


def test_errors_batches_and_big_observations_travel_the_local_socket(farm_proc):
    with farm_proc.connect() as farm:
        assert farm.is_local
        env = farm.make("gymfarm_test/Faulty-v0")
        env.reset(seed=0)
        with pytest.raises(gymfarm.EnvError, match="boom"):
            env.step(1)
        obs = env.step(6)[0]  # a 100 MB observation, read in place
        assert obs.shape == (25_000_000,) and obs.dtype == np.float32 and not obs.any()
        assert env.step(0)[0].shape == (1,)
        env.close()
        with pytest.raises(gymfarm.UnknownInstance):
            farm.call("step", "0" * 32, {"action": 0})
        envs = [farm.make("CartPole-v1") for _ in range(2)]
        for e in envs:
            e.reset(seed=1)
        results = farm.step_batch([(e.instance_id, 0) for e in envs])
        assert len(results) == 2 and all(r["reward"] == 1.0 for r in results)
        for e in envs:
            e.close()


def test_the_local_socket_needs_the_token(tmp_path):
    f = FarmProcess(tmp_path, workers=1, args=["--require-token"])
    try:
        with gymfarm.connect(f.endpoint, token=f.token) as farm:
            assert farm.is_local
            path = farm.server["local"]
            env = farm.make("CartPole-v1")
            env.reset(seed=0)
            env.close()
        # A process that skips the hello on the local socket is refused, as over ZeroMQ.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        frames = [b"make", b"", struct.pack("<Q", 1), msgpack.packb({"env_id": "CartPole-v1"})]
        s.sendall(struct.pack("=I", len(frames)) + b"".join(struct.pack("=I", len(x)) + x for x in frames))
        data = b""
        while True:
            data += s.recv(65536)
            n, at, parts = struct.unpack_from("=I", data)[0], 4, []
            try:
                for _ in range(n):
                    size = struct.unpack_from("=I", data, at)[0]
                    if len(data) < at + 4 + size:
                        raise IndexError
                    parts.append(data[at + 4:at + 4 + size])
                    at += 4 + size
                break
            except (IndexError, struct.error):
                continue
        s.close()
        assert parts[1] == b"err" and msgpack.unpackb(parts[2])["code"] == "unauthorized"
    finally:
        assert f.stop() == 0


def test_a_local_socket_of_another_farm_is_not_used(farm_proc, tmp_path, monkeypatch):
    other = FarmProcess(tmp_path, workers=1)
    try:
        with other.connect() as o:
            other_path = o.server["local"]
        real = gymfarm.client.LocalLink
        monkeypatch.setattr(gymfarm.client, "LocalLink", lambda path, spin: real(other_path, spin))
        with farm_proc.connect() as farm:  # its hello names its own socket; the other farm answers there
            assert not farm.is_local
            assert farm.server["farm"] != ""
            env = farm.make("CartPole-v1")  # served over ZeroMQ by the right farm
            env.reset(seed=0)
            assert env.instance_id in farm.list()
            env.close()
    finally:
        assert other.stop() == 0


def test_sockets_left_by_a_killed_broker_are_removed_at_start(tmp_path):
    import subprocess

    runtime = tmp_path / "rt"
    runtime.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [runtime / f"link-{dead.pid}.sock", runtime / f"native-{dead.pid}.sock",
             runtime / f"backend-{dead.pid}.ipc"]
    live = runtime / f"native-{os.getpid()}.sock"  # a running process's: kept
    for p in stale + [live]:
        p.write_text("")
    f = FarmProcess(tmp_path / "farm", workers=1, args=["--runtime-dir", str(runtime)])
    try:
        assert not any(p.exists() for p in stale)
        assert live.exists()
        with f.connect() as farm:
            assert farm.is_local and farm.server["local"].startswith(str(runtime))
    finally:
        assert f.stop() == 0


def test_without_spinning_the_farm_answers_the_same(tmp_path):
    f = FarmProcess(tmp_path, workers=1, args=["--spin-us", "0"])
    try:
        with f.connect() as farm:
            assert farm.is_local
            assert same(episode(farm, "CartPole-v1", [0, 1] * 10), episode(farm, "CartPole-v1", [0, 1] * 10))
    finally:
        assert f.stop() == 0
