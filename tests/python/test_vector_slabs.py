"""A vector env's step through the slabs (docs/protocol.md "Shared memory"): on a farm whose
workers host several envs, RemoteVectorEnv learns from its first step_vec which rows each worker
holds, then posts each worker's share in a slab of one of its envs (STEP_VEC). The results, errors,
crashes and timeouts are the socket path's; the broker is not on the path."""
import contextlib
import os
import signal
import time

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gymfarm
import gymfarm_testenvs  # noqa: F401  (the test envs, for the in-process side)
from farm_fixture import wait_until
from gymfarm import slab
from trees import assert_same

gym.register_envs(ale_py)

PACKED = ["--envs-per-worker", "4", "--max-workers", "2"]


def step_vec_answers(farm):
    """The broker's step_vec answers so far (requests that went over the socket)."""
    return farm.stats()["answers"].get("step_vec", {}).get("count", 0)


@contextlib.contextmanager
def stepped_once(conn, num_envs, **kwargs):
    """A vector env of Faulty envs, reset and stepped once (it has learned which worker holds which
    env), closed at the end."""
    remote = conn.make_vec("gymfarm_test/Faulty-v0", num_envs=num_envs, **kwargs)
    try:
        remote.reset(seed=0)
        remote.step(np.zeros(num_envs, dtype=np.int64))
        yield remote
    finally:
        remote.close()


def both_up(farm):
    return sum(w["state"] in ("idle", "assigned") for w in farm.stats()["workers"]) == 2


def run(env, seed, actions):
    out = [env.reset(seed=seed)]
    out += [env.step(a) for a in actions]
    return out


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "gymfarm_test/InfoKinds-v0"])  # InfoKinds: infos that vary
def test_the_same_episodes_through_the_slabs_over_the_socket_and_in_process(start_farm, mode, env_id):
    fp = start_farm(workers=2, args=["--envs-per-worker", "8", "--max-workers", "2"])  # room for both vector envs
    local = SyncVectorEnv([lambda: gym.make(env_id) for _ in range(8)], autoreset_mode=mode)
    local.action_space.seed(2)
    actions = [local.action_space.sample() for _ in range(150)]  # episodes end and autoreset
    with fp.connect() as farm, fp.connect(shm=False) as plain:
        slabbed = farm.make_vec(env_id, num_envs=8, autoreset_mode=mode)
        socket = plain.make_vec(env_id, num_envs=8, autoreset_mode=mode)
        try:
            before = step_vec_answers(farm)
            got = run(slabbed, 7, actions)
            assert slabbed._groups is not None and sorted(len(r) for r, _ in slabbed._groups) == [4, 4]
            # the first step went over the socket (it says which worker holds which env), no other
            assert step_vec_answers(farm) - before == 1
            assert farm.stats()["shm"]["answered"] >= 2 * (len(actions) - 1)
            before = step_vec_answers(farm)
            want_socket = run(socket, 7, actions)
            # no slabs: every step over the socket
            assert not socket._groups and step_vec_answers(farm) - before == len(actions)
            want_local = run(local, 7, actions)
            for t, (g, s, w) in enumerate(zip(got, want_socket, want_local, strict=True)):
                assert_same(g, s, f"step {t}: slabs against socket")
                assert_same(g, w, f"step {t}: slabs against in-process")
            # each env's steps are counted as the socket path counts them
            assert farm.stats()["env_steps"] >= 2 * 8 * len(actions)
        finally:
            slabbed.close()
            socket.close()
            local.close()


def test_an_env_error_through_the_slabs_is_the_socket_paths(start_farm):
    fp = start_farm(workers=2, args=PACKED)
    with fp.connect() as farm, fp.connect(shm=False) as plain:
        errs = []
        for conn in (farm, plain):
            with stepped_once(conn, 4) as remote:  # learns the workers' rows
                with pytest.raises(gymfarm.EnvError) as e:
                    remote.step(np.array([0, 0, 1, 0]))
                errs.append((e.value.env_index, e.value.remote_type,
                             str(e.value).split("Traceback")[0].replace(remote.instance_ids[2], "ID"),
                             [r["obs"].tolist() if isinstance(r, dict) else type(r).__name__ for r in e.value.results]))
                obs, *_ = remote.step(np.zeros(4, dtype=np.int64))
                assert obs[:, 0].tolist() == [3.0, 3.0, 2.0, 3.0]
        assert errs[0] == errs[1]


def test_a_worker_killed_mid_step_fails_exactly_its_envs_and_reset_replaces_them(start_farm):
    fp = start_farm(workers=2, args=PACKED)
    with fp.connect() as farm:
        for on_crash in ("raise", "reset"):
            with stepped_once(farm, 8, on_crash=on_crash) as remote:
                assert remote._groups is not None
                victim = next(w for w in farm.stats()["workers"] if remote.instance_ids[0] in w["instances"])
                doomed = {i for i, iid in enumerate(remote.instance_ids) if iid in victim["instances"]}
                assert len(doomed) == 4
                segfault = np.zeros(8, dtype=np.int64)
                segfault[min(doomed)] = 2  # the worker dies while it steps its share
                if on_crash == "raise":
                    with pytest.raises(gymfarm.WorkerCrashed) as e:
                        remote.step(segfault)
                    for i, r in enumerate(e.value.results):
                        assert isinstance(r, gymfarm.WorkerCrashed) == (i in doomed), (i, r)
                else:
                    obs, rewards, _, truncated, infos = remote.step(segfault)
                    crashed = infos.get("_crashed", np.zeros(8))
                    assert [bool(crashed[i]) for i in range(8)] == [i in doomed for i in range(8)]
                    assert [bool(truncated[i]) for i in range(8)] == [i in doomed for i in range(8)]
                    assert remote._groups is None  # relearned: the new envs may sit on another worker
                    for _ in range(3):
                        obs, *_ = remote.step(np.zeros(8, dtype=np.int64))
                    assert remote._groups is not None
                    assert obs[:, 0].tolist() == [3.0 if i in doomed else 5.0 for i in range(8)]
            assert wait_until(lambda: both_up(farm), 30)


def test_a_hung_share_times_out_as_over_the_socket(start_farm):
    fp = start_farm(workers=2, args=PACKED + ["--step-timeout", "1"])
    with fp.connect() as farm, fp.connect(shm=False) as plain:
        codes = []
        for conn in (farm, plain):
            with stepped_once(conn, 8) as remote:
                assert bool(remote._groups) == (conn is farm)  # through the slabs, or the socket
                hang = np.zeros(8, dtype=np.int64)
                hang[0] = 3  # hangs in C holding the GIL: the farm's deadline kills the worker
                with pytest.raises(gymfarm.GymfarmError) as e:
                    remote.step(hang)
                codes.append(sorted({type(r).__name__ for r in e.value.results if not isinstance(r, dict)}))
                assert e.value.code == "timeout"
            assert wait_until(lambda: both_up(farm), 30)
        assert codes[0] == codes[1] == ["Timeout"]


def test_a_share_too_large_for_its_slab_arrives_whole(start_farm):
    fp = start_farm(workers=1, args=["--envs-per-worker", "2", "--shm-slab-kb", "64"])
    local = SyncVectorEnv([lambda: gym.make("ALE/Pong-v5") for _ in range(2)])
    local.action_space.seed(0)
    actions = [local.action_space.sample() for _ in range(12)]
    with fp.connect() as farm:
        pong = farm.make_vec("ALE/Pong-v5", num_envs=2)  # 2 x 100 KB frames: more than a 64 KB slab holds
        try:
            got = run(pong, 5, actions)
            assert pong._groups is not None
            # every share after the first was answered in the slab and fetched with `spilled`
            assert farm.stats()["answers"]["other"]["count"] == len(actions) - 1
            for t, (g, w) in enumerate(zip(got, run(local, 5, actions), strict=True)):
                assert_same(g, w, f"step {t}")
        finally:
            pong.close()
            local.close()


@pytest.mark.parametrize("per_worker", [1, 4])
def test_step_wait_keeps_its_timeout_through_the_slabs(start_farm, per_worker):
    fp = start_farm(workers=2, args=["--envs-per-worker", str(per_worker), "--step-timeout", "3"])
    with fp.connect() as farm:
        with stepped_once(farm, 2) as remote:
            assert remote._groups or all(s is not None for s in remote._slabs)  # the slabs carry the steps
            remote.step_async(np.array([3, 0]))  # env 0 hangs until the farm's deadline kills its worker
            started = time.monotonic()
            with pytest.raises(gymfarm.Timeout) as e:
                remote.step_wait(timeout=0.3)
            assert time.monotonic() - started < 2.5 and e.value.details.get("client_side")
            assert isinstance(e.value.results[1], dict)  # the other env's step is not lost
        assert wait_until(lambda: both_up(farm), 30)


def test_a_share_whose_slab_dies_unanswered_fails_and_is_not_sent_again(start_farm):
    """The broker marks a slab dead when its instance goes, and the worker may still be stepping
    the share posted there: the client must not send the share again, or the other envs step twice."""
    fp = start_farm(workers=1, args=["--envs-per-worker", "2", "--max-workers", "1"])
    with fp.connect() as farm:
        with stepped_once(farm, 2) as remote:  # learns the rows: t = 1 in both envs
            ((rows, lead),) = remote._groups
            worker = next(w["pid"] for w in farm.stats()["workers"] if w["instances"])
            os.kill(worker, signal.SIGSTOP)  # the worker holds the share
            try:
                remote.step_async(np.zeros(2, dtype=np.int64))
                lead._w[slab._STATE] = slab.DEAD  # as the broker marks it when the instance goes
                with pytest.raises(gymfarm.GymfarmError, match="closed before its worker answered") as e:
                    remote.step_wait(timeout=10)
                assert all(isinstance(r, gymfarm.GymfarmError) for r in e.value.results)
            finally:
                os.kill(worker, signal.SIGCONT)  # it steps the share it holds: t = 2
            for iid in remote.instance_ids:  # stepped once by the share, not twice
                assert remote.farm.call("step", iid, {"action": 0})["obs"].tolist() == [3.0]
