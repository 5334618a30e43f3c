"""--envs-per-worker K (throughput mode): one worker hosts up to K envs and a step_batch reaches
it as one step_many message. Same results as SyncVectorEnv; a crash takes exactly the envs of the
crashed worker; capacity is workers x K; instances spread over workers before they pack."""
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gymfarm
from farm_fixture import wait_until
from trees import assert_same


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("packed"), workers=2, args=["--envs-per-worker", "4", "--max-workers", "2"])
    yield f
    assert f.stop() == 0


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_packed_vector_env_equals_sync_vector_env(packed, mode):
    with packed.connect() as farm:
        remote = farm.make_vec("CartPole-v1", num_envs=8, autoreset_mode=mode)
        local = SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(8)], autoreset_mode=mode)
        try:
            workers = farm.stats()["workers"]
            assert sorted(len(w["instances"]) for w in workers) == [4, 4]  # spread, then packed
            assert_same(remote.reset(seed=3), local.reset(seed=3))
            actions = local.action_space
            actions.seed(1)
            assert remote._vec  # several envs per worker: the stacked step_vec path
            for t in range(120):
                a = actions.sample()
                got, want = remote.step(a), local.step(a)
                for k in range(5):
                    assert_same(got[k], want[k], f"step {t} field {k}")
                done = want[2] | want[3]
                if mode == AutoresetMode.DISABLED and done.any():
                    opts = {"reset_mask": done.copy()}
                    assert_same(remote.reset(options=dict(opts)), local.reset(options=dict(opts)))
            assert sum(w["steps"] for w in farm.stats()["workers"]) >= 8 * 120
        finally:
            remote.close()
            local.close()


def test_capacity_is_workers_times_k(packed):
    with packed.connect() as farm:
        envs = [farm.make("CartPole-v1") for _ in range(8)]
        with pytest.raises(gymfarm.CapacityExhausted, match="2 workers hold 4 instances each"):
            farm.make("CartPole-v1")
        envs[0].close()
        extra = farm.make("CartPole-v1")  # room again
        extra.close()
        for e in envs[1:]:
            e.close()


def test_a_crash_takes_exactly_the_envs_of_that_worker(packed):
    with packed.connect() as farm:
        remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=8)
        try:
            remote.reset(seed=0)
            remote.step(np.zeros(8, dtype=np.int64))
            workers = farm.stats()["workers"]
            victim = next(w for w in workers if remote.instance_ids[0] in w["instances"])
            doomed = set(victim["instances"])
            assert len(doomed) == 4
            os.kill(victim["pid"], signal.SIGKILL)
            with pytest.raises(gymfarm.WorkerCrashed) as e:
                remote.step(np.zeros(8, dtype=np.int64))
            for i, (inst, r) in enumerate(zip(remote.instance_ids, e.value.results, strict=True)):
                if inst in doomed:
                    assert isinstance(r, gymfarm.WorkerCrashed), (i, r)
                else:
                    assert isinstance(r, dict) and r["obs"][0] == 2.0, (i, r)
        finally:
            remote.close()
        assert wait_until(lambda: all(w["state"] in ("idle", "assigned") for w in farm.stats()["workers"]), 30)


def test_an_env_error_in_a_packed_batch_stays_with_its_env(packed):
    with packed.connect() as farm:
        envs = [farm.make("gymfarm_test/Faulty-v0") for _ in range(4)]
        try:
            for e in envs:
                e.reset(seed=0)
            results = farm.step_batch([(e.instance_id, 1 if i == 2 else 0) for i, e in enumerate(envs)])
            assert isinstance(results[2], gymfarm.EnvError)
            assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 2)
            assert envs[2].step(0)[0][0] == 1.0  # the env stays, as with one env per worker
        finally:
            for e in envs:
                e.close()


def test_an_env_error_in_a_vector_step_names_its_env_and_keeps_the_others(packed):
    with packed.connect() as farm:
        remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=4)
        try:
            remote.reset(seed=0)
            with pytest.raises(gymfarm.EnvError) as e:
                remote.step(np.array([0, 0, 1, 0]))
            assert e.value.env_index == 2 and "sub-env 2" in str(e.value)
            assert e.value.remote_type == "ValueError" and "Traceback" in e.value.remote_traceback
            assert all(isinstance(r, dict) and r["obs"][0] == 1.0 for i, r in enumerate(e.value.results) if i != 2)
            obs, *_ = remote.step(np.zeros(4, dtype=np.int64))  # the failing env stays, as the others
            assert obs[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0]
        finally:
            remote.close()
