"""The sharded client without Ray: two farms of the start_farm fixture on their own loopback
addresses (127.0.0.2, 127.0.0.3), one token for both, and gymfarm.connect([...]) over them."""
import json
import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import gymfarm
from farm_fixture import wait_until
from gymfarm.errors import FarmLost, FarmUnavailable, Unauthorized
from gymfarm.sharded import ShardedFarm, ShardedVectorEnv

TOKEN = "5f0c2b9e41d7a8c3e6b1f09d2a7c4e58"


@pytest.fixture
def two_farms(start_farm, tmp_path):
    tok = tmp_path / "token"
    fd = os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, TOKEN.encode())
    os.close(fd)
    return [start_farm(workers=3, args=["--host", f"127.0.0.{h}", "--token-file", str(tok)]) for h in (2, 3)]


def ray_initialized():
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _sync(n, mode):
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * n, autoreset_mode=mode)


def _same_infos(a, b):
    assert set(a) == set(b), (sorted(a), sorted(b))
    for k in a:
        if isinstance(a[k], dict):
            _same_infos(a[k], b[k])
        elif a[k].dtype == object:
            for x, y in zip(a[k], b[k], strict=True):
                assert (x is None and y is None) or np.array_equal(x, y), k
        else:
            assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_make_vec_spans_farms_and_matches_sync_vector_env(two_farms, mode):
    with gymfarm.connect([f.endpoint for f in two_farms], token=TOKEN) as farm:
        assert isinstance(farm, ShardedFarm)
        venv = farm.make_vec("CartPole-v1", num_envs=6, autoreset_mode=mode)
        ref = _sync(6, mode)
        assert isinstance(venv, ShardedVectorEnv)
        assert set(venv.endpoints) == {f.endpoint for f in two_farms}
        assert [venv.endpoints.count(f.endpoint) for f in two_farms] == [3, 3]
        obs, info = venv.reset(seed=7)
        robs, rinfo = ref.reset(seed=7)
        assert np.array_equal(obs, robs)
        _same_infos(info, rinfo)
        rng = np.random.default_rng(1)
        ends = 0
        for _ in range(120):
            a = rng.integers(0, 2, size=6)
            got, want = venv.step(a), ref.step(a)
            for x, y in zip(got[:4], want[:4], strict=True):
                assert np.array_equal(x, y)
            _same_infos(got[4], want[4])
            done = got[2] | got[3]
            ends += int(done.sum())
            if mode == AutoresetMode.DISABLED and done.any():
                o, i = venv.reset(options={"reset_mask": done})
                ro, ri = ref.reset(options={"reset_mask": done})
                assert np.array_equal(o, ro)
        assert ends > 0  # episodes ended and were reset on both farms
        s = farm.stats()
        assert s["instances"] == 6 and s["workers"] == 6
        assert sorted(p["endpoint"] for p in s["farms"]) == sorted(f.endpoint for f in two_farms)
        assert all(p["instances"] == 3 and p["requests"] > 120 for p in s["farms"])
        venv.close()


def test_make_places_each_env_on_the_least_loaded_farm(two_farms):
    with gymfarm.connect([f.endpoint for f in two_farms], token=TOKEN) as farm:
        envs = [farm.make("CartPole-v1") for _ in range(4)]
        assert sorted(e.farm.endpoint for e in envs) == sorted([f.endpoint for f in two_farms] * 2)
        held = farm.make_vec("CartPole-v1", num_envs=2)  # now 3 and 3
        a_farm = envs[0].farm
        for e in envs:
            if e.farm is a_farm:
                e.close()  # that farm now holds 1 of the 6 envs, the other 3
        more = farm.make_vec("CartPole-v1", num_envs=2)
        assert more.endpoints == [a_farm.endpoint] * 2
        more.close()
        held.close()


def test_send_recv_across_farms(two_farms):
    with gymfarm.connect([f.endpoint for f in two_farms], token=TOKEN) as farm:
        venv = farm.make_vec("CartPole-v1", num_envs=4)
        ref = _sync(4, AutoresetMode.NEXT_STEP)
        venv.reset(seed=3)
        ref.reset(seed=3)
        acts = np.array([1, 0, 1, 0])
        venv.send(acts)
        obs, rew, term, trunc, info, ids = venv.recv(min_envs=4)
        want = ref.step(acts)
        order = np.argsort(ids)
        assert sorted(ids.tolist()) == [0, 1, 2, 3]
        assert np.array_equal(obs[order], want[0]) and np.array_equal(rew[order], want[1])
        venv.send(np.array([1, 1]), env_ids=[1, 3])  # one env on each farm
        got = []
        while len(got) < 2:
            got += venv.recv(min_envs=1)[5].tolist()
        assert sorted(got) == [1, 3]
        venv.close()


@pytest.mark.parametrize("local", [True, False], ids=["local-socket", "zeromq"])
def test_a_killed_farm_fails_exactly_its_envs_and_the_others_go_on(two_farms, local):
    a, b = two_farms
    with gymfarm.connect([a.endpoint, b.endpoint], token=TOKEN, local=local) as farm:
        venv = farm.make_vec("CartPole-v1", num_envs=6)
        venv.reset(seed=0)
        for _ in range(3):
            venv.step(np.zeros(6, dtype=np.int64))
        lost_rows = [i for i, ep in enumerate(venv.endpoints) if ep == b.endpoint]
        singles = [farm.make("CartPole-v1") for _ in range(2)]  # one on each farm (3+1 against 3+1)
        assert sorted(s.farm.endpoint for s in singles) == sorted([a.endpoint, b.endpoint])
        for s in singles:
            s.reset(seed=0)
        os.kill(b.pid, signal.SIGKILL)
        t0 = time.monotonic()
        for s in singles:  # a single env on the lost farm answers farm_lost; the other steps on
            if s.farm.endpoint == b.endpoint:
                with pytest.raises(FarmLost):
                    s.step(0)
            else:
                s.step(0)
        with pytest.raises(FarmLost) as e:
            for _ in range(100):  # the step in flight when the broker died, or the next
                venv.step(np.zeros(6, dtype=np.int64))
        assert time.monotonic() - t0 < 10.0  # within the lease (10 s), not the 60 s timeout
        assert e.value.code == "farm_lost" and e.value.env_index == lost_rows[0]
        assert e.value.details["rows"] == lost_rows and e.value.details["endpoint"] == b.endpoint
        kinds = [isinstance(r, FarmLost) for r in e.value.results]
        assert [i for i, k in enumerate(kinds) if k] == lost_rows
        for _ in range(3):  # the other farm's envs go on; the lost ones keep answering FarmLost
            with pytest.raises(FarmLost) as again:
                venv.step(np.zeros(6, dtype=np.int64))
            ok = [r for r in again.value.results if isinstance(r, dict)]
            assert len(ok) == 6 - len(lost_rows) and all(r["obs"].shape == (4,) for r in ok)
        assert farm.endpoints == [a.endpoint]
        env = farm.make("CartPole-v1")  # new makes avoid the dead farm
        assert env.farm.endpoint == a.endpoint
        env.reset(seed=1)
        venv.close()


def test_on_crash_reset_remakes_a_lost_farms_envs_on_a_survivor(two_farms):
    a, b = two_farms
    with gymfarm.connect([a.endpoint, b.endpoint], token=TOKEN) as farm:
        venv = farm.make_vec("CartPole-v1", num_envs=4, on_crash="reset")
        venv.reset(seed=0)
        lost_rows = [i for i, ep in enumerate(venv.endpoints) if ep == b.endpoint]
        os.kill(b.pid, signal.SIGKILL)
        crashed = None
        for _ in range(100):
            obs, rew, term, trunc, info = venv.step(np.zeros(4, dtype=np.int64))
            if "crashed" in info:
                crashed = info
                break
        assert crashed is not None
        assert np.flatnonzero(crashed["_crashed"]).tolist() == lost_rows
        assert all(trunc[lost_rows]) and not any(rew[lost_rows])
        assert crashed["crash"]["code"][lost_rows[0]] == "farm_lost"
        assert venv.endpoints == [a.endpoint] * 4
        for _ in range(5):
            venv.step(np.ones(4, dtype=np.int64))
        venv.close()


def test_a_client_without_the_token_is_refused_by_every_farm(two_farms):
    for f in two_farms:
        with pytest.raises(Unauthorized):
            gymfarm.connect(f.endpoint, token="", local=False).make("CartPole-v1")
    with pytest.raises(Unauthorized):
        with gymfarm.connect([f.endpoint for f in two_farms], token="wrong-token-0123456789") as farm:
            farm.make("CartPole-v1")


def test_connect_reads_a_cluster_file(two_farms, tmp_path):
    tok = tmp_path / "cluster-token"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"endpoints": [f.endpoint for f in two_farms], "token_file": str(tok)}))
    with gymfarm.connect(str(path)) as farm:
        assert sorted(farm.endpoints) == sorted(f.endpoint for f in two_farms)
        farm.make("CartPole-v1").reset(seed=0)
    # a file that names a Ray cluster nobody serves (a closed loopback port): the file's own list
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    path.write_text(json.dumps({"endpoints": [f.endpoint for f in two_farms], "token_file": str(tok),
                                "ray_address": closed, "namespace": "gymfarm", "manager": "gymfarm-cluster"}))
    t0 = time.monotonic()
    with gymfarm.connect(str(path)) as farm:
        assert sorted(farm.endpoints) == sorted(f.endpoint for f in two_farms)
        farm.make("CartPole-v1").reset(seed=0)
    assert time.monotonic() - t0 < 10
    assert not ray_initialized()  # nothing reached: this process did not become a Ray driver
    tok.chmod(0o640)  # readable by the group: refused
    with pytest.raises(PermissionError):
        gymfarm.connect(str(path))


@pytest.fixture
def two_curve_farms(start_farm, tmp_path):
    """Two farms with one CURVE server key and one allowed client key, as a FarmCluster makes them."""
    import zmq

    def private(name, text):
        p = tmp_path / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode())
        os.close(fd)
        return str(p)

    server_public, server_secret = (k.decode() for k in zmq.curve_keypair())
    client_public, client_secret = (k.decode() for k in zmq.curve_keypair())
    args = ["--token-file", private("token", TOKEN), "--curve-secret-file", private("server.key", server_secret),
            "--curve-clients-file", private("clients", client_public + "\n")]
    keys = {"server_key": server_public, "public_key": client_public, "secret_key": client_secret}
    farms = [start_farm(workers=2, args=["--host", f"127.0.0.{h}", *args]) for h in (2, 3)]
    return farms, keys, private("client.key", client_secret)


def test_a_client_without_the_curve_key_is_refused_by_every_farm(two_curve_farms, tmp_path):
    farms, keys, client_key_file = two_curve_farms
    eps = [f.endpoint for f in farms]
    for ep in eps:
        t0 = time.monotonic()
        with pytest.raises(FarmUnavailable):
            gymfarm.connect(ep, token=TOKEN, local=False, connect_timeout=2)
        assert time.monotonic() - t0 < 8
    with pytest.raises(FarmUnavailable):
        gymfarm.connect(eps, token=TOKEN, connect_timeout=2)
    # with the keys, the sharded client and its vector env span both farms, over ZeroMQ and locally
    for local in (False, None):
        with gymfarm.connect(eps, token=TOKEN, curve=keys, local=local) as farm:
            venv = farm.make_vec("CartPole-v1", num_envs=4)
            assert sorted(set(venv.endpoints)) == sorted(eps)
            venv.reset(seed=0)
            venv.step(np.zeros(4, dtype=np.int64))
            venv.close()
    # a cluster file carries the keys, the client's secret in an owner-only file beside the token's
    path = tmp_path / "cluster.json"
    tok = tmp_path / "token"
    path.write_text(json.dumps({"endpoints": eps, "token_file": str(tok),
                                "curve": {"server_key": keys["server_key"], "public_key": keys["public_key"],
                                          "secret_key_file": client_key_file}}))
    with gymfarm.connect(str(path)) as farm:
        farm.make("CartPole-v1").reset(seed=0)
    os.chmod(client_key_file, 0o644)
    with pytest.raises(PermissionError):
        gymfarm.connect(str(path))


def test_all_farms_gone_is_farm_unavailable(two_farms):
    with gymfarm.connect([f.endpoint for f in two_farms], token=TOKEN) as farm:
        for f in two_farms:
            os.kill(f.pid, signal.SIGKILL)
        assert wait_until(lambda: farm.endpoints == [], 10)
        with pytest.raises(gymfarm.FarmUnavailable):
            farm.make("CartPole-v1")


def test_sb3_remote_vec_env_spans_farms_with_subproc_semantics(two_farms, monkeypatch):
    from gymfarm.sb3 import RemoteVecEnv

    monkeypatch.setenv("GYMFARM_TOKEN", TOKEN)  # RemoteVecEnv takes the token from the environment
    venv = RemoteVecEnv("CartPole-v1", num_envs=4, endpoint=[f.endpoint for f in two_farms], max_episode_steps=15)
    envs = [gym.make("CartPole-v1", max_episode_steps=15) for _ in range(4)]
    try:
        assert isinstance(venv.farm, ShardedFarm)
        held = {f.endpoint: f.connect(token=TOKEN).stats()["instances"] for f in two_farms}
        assert sorted(held.values()) == [2, 2]  # two envs on each farm
        venv.seed(5)
        np.testing.assert_array_equal(venv.reset(), np.stack([e.reset(seed=5 + i)[0] for i, e in enumerate(envs)]))
        ends = 0
        for t in range(40):
            actions = np.array([(t + i) % 2 for i in range(4)])
            venv.step_async(actions)
            obs, rew, dones, infos = venv.step_wait()
            for i, e in enumerate(envs):
                o, r, term, trunc, _ = e.step(actions[i])
                assert infos[i]["TimeLimit.truncated"] == (trunc and not term)
                if term or trunc:
                    np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                    o, _ = e.reset()
                    ends += 1
                np.testing.assert_array_equal(obs[i], o)
                assert rew[i] == r and dones[i] == (term or trunc)
        assert ends > 0
    finally:
        venv.close()
    assert sum(f.connect(token=TOKEN).stats()["instances"] for f in two_farms) == 0


def test_gymnasium_make_vec_with_several_farms(two_farms, monkeypatch):
    monkeypatch.setenv("GYMFARM_TOKEN", TOKEN)
    eps = [f.endpoint for f in two_farms]
    venv = gym.make_vec("gymfarm/CartPole-v1", num_envs=4, endpoint=eps)
    assert isinstance(venv, ShardedVectorEnv) and set(venv.endpoints) == set(eps)
    ref = _sync(4, AutoresetMode.NEXT_STEP)
    assert np.array_equal(venv.reset(seed=2)[0], ref.reset(seed=2)[0])
    for _ in range(30):
        a = np.ones(4, dtype=np.int64)
        assert np.array_equal(venv.step(a)[0], ref.step(a)[0])
    venv.close()
    env = gym.make("gymfarm/CartPole-v1", endpoint=eps)
    assert env.unwrapped.farm.endpoint in eps
    env.reset(seed=0)
    env.close()


@pytest.mark.parametrize("env_id", ["gymfarm_test/DictObs-v0", "gymfarm_test/TupleObs-v0"])
def test_structured_spaces_across_farms_match_sync_vector_env(two_farms, env_id):
    import gymfarm_testenvs  # noqa: F401 - registers the ids for the in-process reference

    with gymfarm.connect([f.endpoint for f in two_farms], token=TOKEN) as farm:
        venv = farm.make_vec(env_id, num_envs=4, autoreset_mode=AutoresetMode.SAME_STEP)
        ref = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * 4, autoreset_mode=AutoresetMode.SAME_STEP)
        assert len(set(venv.endpoints)) == 2
        venv.action_space.seed(0)
        got, want = venv.reset(seed=1), ref.reset(seed=1)
        for _ in range(60):
            a = venv.action_space.sample()
            got, want = venv.step(a), ref.step(a)
            assert data_equivalence(got[0], want[0])
            for x, y in zip(got[1:4], want[1:4], strict=True):
                assert np.array_equal(x, y)
            assert set(got[4]) == set(want[4])
        venv.close()


def test_gymfarm_make_vec_with_several_farms(two_farms):
    venv = gymfarm.make_vec("CartPole-v1", num_envs=4, endpoint=[f.endpoint for f in two_farms], token=TOKEN)
    assert isinstance(venv, ShardedVectorEnv) and len(set(venv.endpoints)) == 2
    venv.reset(seed=0)
    venv.step(np.zeros(4, dtype=np.int64))
    venv.close()
    assert all(f.connect(token=TOKEN).stats()["instances"] == 0 for f in two_farms)
