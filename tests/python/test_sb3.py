"""gymfarm.sb3.RemoteVecEnv: SubprocVecEnv semantics (terminal_observation, TimeLimit.truncated,
seed, set_options, env_method, get_images). Runs without SB3 against an in-process reference of
those semantics; with SB3 installed it also checks the class is a real SB3 VecEnv and matches
DummyVecEnv step for step."""
import gymnasium as gym
import numpy as np
import pytest

import gymfarm
from gymfarm.sb3 import HAVE_SB3, RemoteVecEnv


class Reference:
    """What SB3's SubprocVecEnv does with in-process envs."""

    def __init__(self, env_id, n, **kw):
        self.envs = [gym.make(env_id, **kw) for _ in range(n)]

    def reset(self, seeds):
        return np.stack([e.reset(seed=s)[0] for e, s in zip(self.envs, seeds, strict=True)])

    def step(self, actions):
        obs, rews, dones, infos = [], [], [], []
        for e, a in zip(self.envs, actions, strict=True):
            o, r, term, trunc, info = e.step(a)
            info = dict(info)
            info["TimeLimit.truncated"] = trunc and not term
            if term or trunc:
                info["terminal_observation"] = o
                o, _ = e.reset()
            obs.append(o)
            rews.append(r)
            dones.append(term or trunc)
            infos.append(info)
        return np.stack(obs), np.stack(rews), np.stack(dones), infos


def test_matches_subproc_semantics(shared_farm):
    venv = RemoteVecEnv("CartPole-v1", num_envs=3, endpoint=shared_farm.endpoint, max_episode_steps=20)
    ref = Reference("CartPole-v1", 3, max_episode_steps=20)
    with shared_farm.connect() as watcher:
        through_slabs = watcher.stats()["shm"]["answered"]
    try:
        assert all(s is not None for s in venv._slabs)  # on the farm's host: each env's steps through its slab
        assert venv.num_envs == 3 and venv.action_space == gym.spaces.Discrete(2)
        assert venv.seed(10) == [10, 11, 12]
        np.testing.assert_array_equal(venv.reset(), ref.reset([10, 11, 12]))
        truncations = 0
        for t in range(60):
            actions = np.array([(t + i) % 2 for i in range(3)])
            venv.step_async(actions)
            got = venv.step_wait()
            want = ref.step(actions)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[2], want[2])
            for g, w in zip(got[3], want[3], strict=True):
                assert set(g) == set(w)
                assert g["TimeLimit.truncated"] == w["TimeLimit.truncated"]
                truncations += g["TimeLimit.truncated"]
                if "terminal_observation" in w:
                    np.testing.assert_array_equal(g["terminal_observation"], w["terminal_observation"])
        assert truncations > 0
        with shared_farm.connect() as watcher:
            assert watcher.stats()["shm"]["answered"] - through_slabs >= 3 * 60  # every step, none over the socket
    finally:
        venv.close()


def test_options_attrs_methods_images(shared_farm):
    venv = RemoteVecEnv("gymfarm_test/Faulty-v0", num_envs=2, endpoint=shared_farm.endpoint)
    try:
        venv.set_options({"raise": True})
        with pytest.raises(gymfarm.EnvError) as e:
            venv.reset()
        assert e.value.env_index == 0
        venv.set_options(None)
        venv.reset()
        venv.reset()  # options given once apply to one reset only
        assert venv.get_attr("length") == [1000, 1000]
        venv.set_attr("length", 7, indices=[1])
        assert venv.get_attr("length") == [1000, 7]
        assert venv.env_method("render", indices=1) == [None]
        assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
        assert venv.get_images() == [None, None]
    finally:
        venv.close()
    rgb = RemoteVecEnv("CartPole-v1", num_envs=2, endpoint=shared_farm.endpoint, render_mode="rgb_array")
    try:
        rgb.reset()
        images = rgb.get_images()
        assert len(images) == 2 and images[0].shape == (400, 600, 3)
        assert rgb.get_attr("render_mode") == ["rgb_array", "rgb_array"]
    finally:
        rgb.close()


@pytest.mark.skipif(not HAVE_SB3, reason="stable-baselines3 is not installed")
def test_is_an_sb3_vec_env_and_equals_dummy_vec_env(shared_farm):  # pragma: no cover
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

    venv = RemoteVecEnv("CartPole-v1", num_envs=2, endpoint=shared_farm.endpoint)
    dummy = DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(2)])
    try:
        assert isinstance(venv, VecEnv)
        venv.seed(3)
        dummy.seed(3)
        np.testing.assert_array_equal(venv.reset(), dummy.reset())
        for t in range(100):
            a = np.array([t % 2, (t + 1) % 2])
            g, w = venv.step(a), dummy.step(a)
            for k in range(3):
                np.testing.assert_array_equal(g[k], w[k])
    finally:
        venv.close()
        dummy.close()
