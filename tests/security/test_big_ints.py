"""Finding: a Python int beyond 64 bits killed the worker (SIGABRT) that tried to send it, and with
--envs-per-worker every other env of that worker with it. A seedless reset's np_random_seed (128
bits of entropy) or an info value of 2**200 was enough.

Now such an int travels as ext type 2 (its decimal digits; docs/protocol.md "Values") and the
client decodes it to the same Python int; one the wire cannot carry (more digits than Python turns
into text) is an env_error for that request, and the worker lives."""
import json
import urllib.request

import gymnasium as gym
import numpy as np
import pytest

import gymfarm


def worker_pid(farm: gymfarm.Farm, instance_id: str) -> int:
    for w in farm.stats()["workers"]:
        if instance_id in (w.get("instances") or []) or w.get("instance") == instance_id:
            return w["pid"]
    raise AssertionError(f"no worker holds {instance_id}")


def get_attr(env, name):
    return env._call("get_attr", {"name": name})["value"]


def test_seedless_np_random_seed_equals_the_in_process_value(start_farm):
    f = start_farm(workers=1)
    with f.connect() as farm:
        env = farm.make("CartPole-v1")
        pid = worker_pid(farm, env.instance_id)
        obs, _ = env.reset()  # no seed: the env draws 128 bits of entropy
        seed = get_attr(env, "np_random_seed")
        assert isinstance(seed, int) and seed >= 2 ** 64, seed
        # the same seed in process gives the same start state: the value arrived exactly
        local = gym.make("CartPole-v1")
        local_obs, _ = local.reset(seed=seed)
        assert local.unwrapped.np_random_seed == seed
        np.testing.assert_array_equal(obs, local_obs)
        # the worker lives and keeps serving
        env.step(0)
        assert worker_pid(farm, env.instance_id) == pid
        env.close()


def test_big_int_in_info_arrives_exactly(start_farm):
    f = start_farm(workers=1)
    with f.connect() as farm:
        env = farm.make("gymfarm_test/BigInfo-v0")
        pid = worker_pid(farm, env.instance_id)
        env.reset(seed=1)
        _, _, _, _, info = env.step(0)
        assert info["big"] == 2 ** 200 and type(info["big"]) is int
        assert info["negative"] == -(2 ** 200)
        assert info["u64max"] == 2 ** 64 - 1
        assert worker_pid(farm, env.instance_id) == pid
        env.close()


def test_big_int_in_the_gateway_json_is_a_decimal_number(start_farm):
    """gym-http-api REST: the info's big ints are JSON numbers that json.loads reads back exactly."""
    f = start_farm(workers=1)

    def post(path, body):
        req = urllib.request.Request(f.rest_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read().decode()

    iid = json.loads(post("envs/", {"env_id": "gymfarm_test/BigInfo-v0"}))["instance_id"]
    post(f"envs/{iid}/reset/", {})
    text = post(f"envs/{iid}/step/", {"action": 0})
    assert '"big":1606938044258990275541962092341162602522202993782792835301376' in text
    info = json.loads(text)["info"]
    assert info["big"] == 2 ** 200 and info["negative"] == -(2 ** 200) and info["u64max"] == 2 ** 64 - 1


def test_big_int_from_the_client_reaches_the_env(start_farm):
    f = start_farm(workers=1)
    with f.connect() as farm:
        env = farm.make("CartPole-v1")
        env._call("set_attr", {"name": "gymfarm_big", "value": -(3 ** 300)})
        assert get_attr(env, "gymfarm_big") == -(3 ** 300)
        env.close()


def test_int_the_wire_cannot_carry_is_an_env_error_and_the_worker_lives(start_farm):
    f = start_farm(workers=1)
    with f.connect() as farm:
        env = farm.make("gymfarm_test/BigInfo-v0")
        pid = worker_pid(farm, env.instance_id)
        env.reset(seed=1)
        with pytest.raises(gymfarm.EnvError, match="digits"):
            env.step(1)  # an info int of 5001 digits
        _, _, _, _, info = env.step(0)
        assert info["big"] == 2 ** 200
        assert worker_pid(farm, env.instance_id) == pid
        env.close()


@pytest.mark.parametrize("method,args,match", [
    ("nested", [200], "nested too deeply"),
    ("lone_surrogate", [], "surrogate"),
])
def test_other_values_the_wire_cannot_carry_are_env_errors(start_farm, method, args, match):
    """The same class of abort: a reply the codec refuses, raised in C with no Python traceback."""
    f = start_farm(workers=1)
    with f.connect() as farm:
        env = farm.make("gymfarm_test/BigInfo-v0")
        pid = worker_pid(farm, env.instance_id)
        with pytest.raises(gymfarm.EnvError, match=match):
            env._call("call", {"name": method, "args": args})
        assert env._call("call", {"name": "nested", "args": [3]})["value"] == [[[[]]]]
        assert worker_pid(farm, env.instance_id) == pid
        env.close()


def test_neighbour_envs_of_one_worker_keep_stepping(start_farm):
    f = start_farm(workers=1, args=["--envs-per-worker", "4"])
    with f.connect() as farm:
        big = farm.make("gymfarm_test/BigInfo-v0")
        others = [farm.make("CartPole-v1") for _ in range(3)]
        pid = worker_pid(farm, big.instance_id)
        assert all(worker_pid(farm, e.instance_id) == pid for e in others)  # all four in one worker
        big.reset(seed=0)
        for e in others:
            e.reset(seed=0)
        for _ in range(3):
            with pytest.raises(gymfarm.EnvError):
                big.step(1)
            assert big.step(0)[4]["big"] == 2 ** 200
            for e in others:
                e.step(0)
        assert worker_pid(farm, big.instance_id) == pid
        for e in [big] + others:
            e.close()


def test_vector_step_of_one_worker_fails_only_the_env_that_cannot_be_sent(start_farm):
    f = start_farm(workers=1, args=["--envs-per-worker", "4"])
    with f.connect() as farm:
        vec = farm.make_vec("gymfarm_test/BigInfo-v0", num_envs=4)
        assert vec._vec  # one worker, several envs: the stacked step_vec path
        pid = farm.stats()["workers"][0]["pid"]
        vec.reset(seed=0)
        vec.step(np.array([2, 2, 2, 2]))
        with pytest.raises(gymfarm.EnvError, match="digits"):
            vec.step(np.array([2, 1, 2, 2]))
        obs, _, _, _, infos = vec.step(np.array([2, 2, 2, 2]))
        assert farm.stats()["workers"][0]["pid"] == pid
        np.testing.assert_array_equal(obs[:, 0], [3, 3, 3, 3])  # every env went on stepping
        np.testing.assert_array_equal(infos["t"], [3, 3, 3, 3])
        vec.close()
