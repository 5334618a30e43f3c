"""RemoteVectorEnv against Gymnasium's SyncVectorEnv: same seeds, same actions, same everything,
in every autoreset mode; plus async stepping and attribute calls."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gymfarm
import gymfarm_testenvs  # noqa: F401
from trees import assert_same


@pytest.fixture(scope="module")
def farm(shared_farm):
    f = shared_farm.connect()
    yield f
    f.close()


def sync(env_id, n, mode, **kw):
    return SyncVectorEnv([lambda: gym.make(env_id, **kw) for _ in range(n)], autoreset_mode=mode)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "gymfarm_test/DictObs-v0"])
def test_equals_sync_vector_env(farm, env_id, mode):
    n = 4
    remote = farm.make_vec(env_id, num_envs=n, autoreset_mode=mode)
    local = sync(env_id, n, mode)
    try:
        assert remote.num_envs == n
        assert remote.metadata["autoreset_mode"] == mode
        assert remote.single_observation_space == local.single_observation_space
        assert remote.single_action_space == local.single_action_space
        assert remote.observation_space == local.observation_space
        assert remote.action_space == local.action_space
        assert_same(remote.reset(seed=11), local.reset(seed=11))
        actions = local.action_space
        actions.seed(5)
        episodes = 0
        for t in range(150):
            a = actions.sample()
            got, want = remote.step(a), local.step(a)
            for k, name in enumerate(["obs", "rewards", "terminations", "truncations", "infos"]):
                assert_same(got[k], want[k], f"step {t} {name}")
            done = want[2] | want[3]
            episodes += int(done.sum())
            if mode == AutoresetMode.DISABLED and done.any():
                opts = {"reset_mask": done.copy()}
                assert_same(remote.reset(options=dict(opts)), local.reset(options=dict(opts)))
        assert episodes > 0, "no episode ended: the autoreset path was not exercised"
    finally:
        remote.close()
        local.close()


def test_reset_with_seed_list_and_options(farm):
    remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=3)
    try:
        obs, info = remote.reset(seed=[1, None, 3])
        assert obs.shape == (3, 1) and obs.dtype == np.float32
        with pytest.raises(ValueError, match="length must match"):
            remote.reset(seed=[1, 2])
        with pytest.raises(gymfarm.EnvError) as e:
            remote.reset(options={"raise": True})
        assert e.value.env_index == 0 and "sub-env 0" in str(e.value)
    finally:
        remote.close()


def test_disabled_mode_refuses_to_step_a_finished_env(farm):
    remote = farm.make_vec("gymfarm_test/MultiBinary-v0", num_envs=2, autoreset_mode=AutoresetMode.DISABLED)
    try:
        remote.reset(seed=0)
        for _ in range(10):
            _, _, term, trunc, _ = remote.step(remote.action_space.sample())
        assert term.all()
        with pytest.raises(AssertionError, match="reset_mask"):
            remote.step(remote.action_space.sample())
    finally:
        remote.close()


def test_step_async_and_wait(farm):
    remote = farm.make_vec("CartPole-v1", num_envs=3)
    local = sync("CartPole-v1", 3, AutoresetMode.NEXT_STEP)
    try:
        assert_same(remote.reset(seed=0), local.reset(seed=0))
        for _ in range(30):
            a = np.array([1, 0, 1])
            remote.step_async(a)
            assert_same(remote.step_wait(), local.step(a))
        with pytest.raises(RuntimeError):
            remote.step_wait()
    finally:
        remote.close()
        local.close()


def test_send_recv_returns_finished_envs_with_ids(farm):
    remote = farm.make_vec("CartPole-v1", num_envs=4)
    try:
        remote.reset(seed=0)
        remote.send(np.array([0, 1, 0, 1]))
        seen = []
        while len(seen) < 4:
            obs, rew, term, trunc, info, ids = remote.recv(min_envs=1)
            assert obs.shape == (len(ids), 4) and rew.shape == (len(ids),)
            assert (rew == 1.0).all()
            seen.extend(ids.tolist())
        assert sorted(seen) == [0, 1, 2, 3]
        remote.send([1, 1], env_ids=[2, 0])
        with pytest.raises(RuntimeError, match="in flight"):
            remote.send([0], env_ids=[2])
        _, _, _, _, _, ids = remote.recv(min_envs=2)
        assert sorted(ids.tolist()) == [0, 2]
    finally:
        remote.close()


def test_call_get_attr_set_attr_render(farm):
    remote = farm.make_vec("gymfarm_test/DictObs-v0", num_envs=2, render_mode="ansi")
    try:
        remote.reset(seed=0)
        assert remote.get_attr("length") == (10, 10)
        remote.set_attr("length", [3, 5])
        assert remote.get_attr("length") == (3, 5)
        assert remote.call("render") == ("t=0\n", "t=0\n")
        assert remote.render() == ("t=0\n", "t=0\n")
        for _ in range(3):
            _, _, term, _, _ = remote.step(remote.action_space.sample())
        assert term.tolist() == [True, False]
        with pytest.raises(gymfarm.BadRequest):
            remote.get_attr("__class__")
    finally:
        remote.close()


def test_a_worker_killed_mid_batch_names_the_sub_env_and_keeps_the_others(shared_farm):
    import os
    import signal
    with shared_farm.connect() as farm:
        remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=3)
        try:
            remote.reset(seed=0)
            remote.step(np.array([0, 0, 0]))
            victim = remote.instance_ids[1]
            pid = next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == victim)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(gymfarm.WorkerCrashed) as e:
                remote.step(np.array([0, 0, 0]))
            assert e.value.env_index == 1 and "sub-env 1" in str(e.value)
            assert e.value.details["signal"] == signal.SIGKILL
            ok = [r for i, r in enumerate(e.value.results) if i != 1]
            assert all(isinstance(r, dict) and r["obs"][0] == 2.0 for r in ok)
        finally:
            remote.close()


def test_gymnasium_make_and_make_vec_reach_the_farm(shared_farm):
    env = gym.make("gymfarm/CartPole-v1", endpoint=shared_farm.endpoint)
    local = gym.make("CartPole-v1")
    try:
        assert isinstance(env.unwrapped, gymfarm.RemoteEnv)
        assert_same(env.reset(seed=4), local.reset(seed=4))
        assert_same(env.step(1), local.step(1))
    finally:
        env.close()
        local.close()
    assert env.unwrapped.farm._closed
    vec = gym.make_vec("gymfarm/CartPole-v1", num_envs=3, endpoint=shared_farm.endpoint,
                       autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        assert isinstance(vec, gymfarm.RemoteVectorEnv) and vec.num_envs == 3
        assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        obs, _ = vec.reset(seed=0)
        assert obs.shape == (3, 4)
    finally:
        vec.close()
    name = gymfarm.register_remote("gymfarm_test/TextObs-v0")
    assert name == "gymfarm/TextObs-v0"
    text = gym.make(name, endpoint=shared_farm.endpoint)
    try:
        obs, _ = text.reset(seed=0)
        assert isinstance(obs, str)
    finally:
        text.close()
    direct = gymfarm.make_vec("Pendulum-v1", num_envs=2, endpoint=shared_farm.endpoint)
    try:
        assert direct.reset(seed=0)[0].shape == (2, 3)
    finally:
        direct.close()
