"""Integration tests: real Gymnasium envs through a real farm on 127.0.0.1, compared with the same
envs run in this process."""
import threading

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import gymfarm
import gymfarm_testenvs  # noqa: F401  (registers gymfarm_test/* in this process too)
from trees import assert_same

TAXI = "Taxi-v4" if "Taxi-v4" in gym.registry else "Taxi-v3"  # Gymnasium 1.3 replaced v3 with v4
ENV_IDS = [
    "CartPole-v1", "MountainCarContinuous-v0", "Pendulum-v1", "FrozenLake-v1", "Blackjack-v1", TAXI,
    "gymfarm_test/DictObs-v0", "gymfarm_test/TextObs-v0", "gymfarm_test/MultiBinary-v0",
    "gymfarm_test/MultiDiscrete-v0", "gymfarm_test/TupleObs-v0",
]


@pytest.fixture(scope="module")
def farm(shared_farm):
    f = shared_farm.connect()
    yield f
    f.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_equal_in_process_and_check_env_passes(farm, env_id):
    env = farm.make(env_id)
    local = gym.make(env_id)
    try:
        assert isinstance(env, gym.Env)
        assert env.observation_space == local.observation_space
        assert env.action_space == local.action_space
        assert type(env.observation_space) is type(local.observation_space)
        if isinstance(local.observation_space, gym.spaces.Box):
            assert env.observation_space.dtype == local.observation_space.dtype
            np.testing.assert_array_equal(env.observation_space.low, local.observation_space.low)
            np.testing.assert_array_equal(env.observation_space.high, local.observation_space.high)
        check_env(env, skip_render_check=True)
        obs, _ = env.reset(seed=1)
        assert env.observation_space.contains(obs)
    finally:
        env.close()
        local.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_trajectory_equals_in_process(farm, env_id):
    env = farm.make(env_id)
    local = gym.make(env_id)
    try:
        actions = gym.make(env_id).action_space
        actions.seed(123)
        obs, info = env.reset(seed=7)
        lobs, linfo = local.reset(seed=7)
        assert_same(obs, lobs, "reset obs")
        assert_same(info, linfo, "reset info")
        for t in range(120):
            a = actions.sample()
            got = env.step(a)
            want = local.step(a)
            assert_same(got[0], want[0], f"obs at {t}")
            assert got[1] == want[1] and type(got[1]) is type(want[1]), f"reward at {t}: {got[1]!r} != {want[1]!r}"
            assert got[2:4] == (bool(want[2]), bool(want[3])), f"done flags at {t}"
            if got[2] or got[3]:
                obs, _ = env.reset()
                lobs, _ = local.reset()
                assert_same(obs, lobs, f"reset obs after {t}")
    finally:
        env.close()
        local.close()


def test_infinite_bounds_survive(farm):
    env = farm.make("CartPole-v1")
    try:
        assert np.isinf(env.observation_space.high[1]) and env.observation_space.high[1] > 0
        assert np.isinf(env.observation_space.low[3]) and env.observation_space.low[3] < 0
    finally:
        env.close()


def test_render_rgb_array_matches_in_process(farm):
    env = farm.make("CartPole-v1", render_mode="rgb_array")
    local = gym.make("CartPole-v1", render_mode="rgb_array")
    try:
        assert env.render_mode == "rgb_array"
        env.reset(seed=3)
        local.reset(seed=3)
        env.step(1)
        local.step(1)
        frame = env.render()
        assert_same(frame, local.render())
        assert frame.dtype == np.uint8 and frame.shape == (400, 600, 3)
    finally:
        env.close()
        local.close()


def test_render_ansi_and_none(farm):
    env = farm.make("gymfarm_test/DictObs-v0", render_mode="ansi")
    plain = farm.make("CartPole-v1")
    try:
        env.reset(seed=0)
        assert env.render() == "t=0\n"
        plain.reset(seed=0)
        assert plain.render() is None
    finally:
        env.close()
        plain.close()


def test_sixteen_envs_at_once_from_threads(farm, shared_farm):
    results = {}

    def run(i):
        with shared_farm.connect() as conn:
            env = conn.make("CartPole-v1")
            local = gym.make("CartPole-v1")
            obs, _ = env.reset(seed=i)
            lobs, _ = local.reset(seed=i)
            ok = np.array_equal(obs, lobs)
            for t in range(200):
                a = t % 2
                o, r, term, trunc, _ = env.step(a)
                lo, lr, lterm, ltrunc, _ = local.step(a)
                ok = ok and np.array_equal(o, lo) and (term, trunc) == (lterm, ltrunc)
                if term or trunc:
                    env.reset()
                    local.reset()
            env.close()
            results[i] = ok

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {i: True for i in range(16)}


def test_batched_step_of_sixteen_envs(farm):
    envs = [farm.make("CartPole-v1") for _ in range(16)]
    locals_ = [gym.make("CartPole-v1") for _ in range(16)]
    try:
        for i, (e, local) in enumerate(zip(envs, locals_, strict=True)):
            assert_same(e.reset(seed=100 + i)[0], local.reset(seed=100 + i)[0])
        for t in range(50):
            acts = [(i + t) % 2 for i in range(16)]
            out = farm.step_batch([(e.instance_id, a) for e, a in zip(envs, acts, strict=True)])
            assert len(out) == 16
            for r, e, local, a in zip(out, envs, locals_, acts, strict=True):
                lo, lr, lterm, ltrunc, _ = local.step(a)
                assert_same(r["obs"], lo)
                assert (r["reward"], r["terminated"], r["truncated"]) == (lr, lterm, ltrunc)
                if lterm or ltrunc:
                    assert_same(e.reset()[0], local.reset()[0])
    finally:
        for e in envs:
            e.close()


def test_batched_step_reports_each_env_separately(farm):
    env = farm.make("CartPole-v1")
    try:
        env.reset(seed=0)
        out = farm.step_batch([(env.instance_id, 0), ("0" * 32, 0), (env.instance_id, 7)])
        assert isinstance(out[0], dict) and out[0]["reward"] == 1.0
        assert isinstance(out[1], gymfarm.UnknownInstance)
        assert isinstance(out[2], gymfarm.EnvError)  # CartPole's own check refuses 7, as in-process
    finally:
        env.close()


def test_typed_errors(farm):
    with pytest.raises(gymfarm.UnknownInstance):
        farm.call("step", "f" * 32, {"action": 0})
    with pytest.raises(gymfarm.BadRequest, match="doesn't exist"):
        farm.make("NoSuchEnv-v0")
    with pytest.raises(gymfarm.BadRequest, match="--import"):
        farm.make("os:system")
    with pytest.raises(gymfarm.BadRequest, match="unknown verb"):
        farm.call("explode")
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    with pytest.raises(gymfarm.EnvError, match="AssertionError"):  # the env's own refusal, as in-process
        env.step(2)
    with pytest.raises(gymfarm.EnvError, match="AssertionError"):
        env.step("left")
    assert env.step(1)[1] == 1.0  # the instance survives bad actions
    env.close()
    with pytest.raises(gymfarm.UnknownInstance):
        env.step(0)


def test_box_action_outside_bounds_reaches_the_env(farm):
    env, local = farm.make("Pendulum-v1"), gym.make("Pendulum-v1")
    try:
        env.reset(seed=0)
        local.reset(seed=0)
        assert env.step(np.array([5.0], dtype=np.float32))[1] == local.step(np.array([5.0], dtype=np.float32))[1]
        obs, *_ = env.step(np.array([1.0], dtype=np.float32))
        assert obs.dtype == np.float32 and obs.shape == (3,)
    finally:
        env.close()
        local.close()


def test_make_failure_is_env_error_and_worker_returns_to_pool(farm):
    before = len(farm.list())
    with pytest.raises(gymfarm.EnvError) as e:
        farm.make("gymfarm_test/BrokenMake-v0")
    assert e.value.remote_type == "RuntimeError"
    assert "cannot be constructed" in e.value.remote_traceback
    assert len(farm.list()) == before


def test_list_envs_stats_sample(farm):
    assert "CartPole-v1" in farm.envs() and "gymfarm_test/Faulty-v0" in farm.envs()
    env = farm.make(TAXI)
    try:
        assert farm.list()[env.instance_id] == TAXI
        a = env.sample()
        assert env.action_space.contains(a)
        o = env.sample("observation")
        assert env.observation_space.contains(o)
        stats = farm.stats()
        mine = [w for w in stats["workers"] if w["instance"] == env.instance_id]
        assert len(mine) == 1 and mine[0]["env_id"] == TAXI and mine[0]["rss_bytes"] > 0
        assert farm.ping()
    finally:
        env.close()


def test_protocol_version_is_checked(farm):
    with pytest.raises(gymfarm.BadRequest, match="version"):
        farm.call("hello", body={"version": 99})


def test_no_farm_gives_clear_error():
    with pytest.raises(gymfarm.FarmUnavailable):
        gymfarm.connect("tcp://127.0.0.1:9", connect_timeout=0.5)


@pytest.mark.parametrize("env_id", ["CartPole-v1", TAXI, "Blackjack-v1", "gymfarm_test/DictObs-v0"])
def test_gymnasium_check_environments_match(farm, env_id):
    from gymnasium.utils.env_match import check_environments_match

    env = farm.make(env_id, render_mode="rgb_array") if env_id == "CartPole-v1" else farm.make(env_id)
    local = gym.make(env_id, render_mode="rgb_array") if env_id == "CartPole-v1" else gym.make(env_id)
    try:
        check_environments_match(env, local, num_steps=100, seed=3, skip_render=env_id != "CartPole-v1")
    finally:
        env.close()
        local.close()


def test_numpy_values_sent_to_the_env_arrive_as_in_process(farm):
    """An action, reset options and a method's arguments reach the env with their NumPy types and
    bits (np.float64 too, a float subclass), and containers as their base types."""
    import collections
    import enum
    import pickle

    class Level(enum.IntEnum):
        HIGH = 3

    nan32 = np.frombuffer(b"\x01\x00\xc0\x7f", "<f4")[0]
    args = (np.float64(0.1), np.int64(-2), nan32, np.float16(1.5), np.bool_(True), Level.HIGH, 2**70)
    kwargs = {"d": collections.OrderedDict(b=np.float64(2)), "t": (np.uint8(1), "x")}
    options = {"x": np.float64(0.5), "n": np.int32(3)}
    remote, local = farm.make("gymfarm_test/InfoKinds-v0"), gym.make("gymfarm_test/InfoKinds-v0")
    got = []
    for env in (remote, local):
        _, info = env.reset(seed=1, options=options)
        stepped = [env.step(a)[4]["action"] for a in (np.int64(1), 0, np.int8(1))]
        echoed = env.unwrapped.echo(*args, **kwargs) if env is local else env.echo(*args, **kwargs)
        got.append((info["options"], stepped, echoed))
    (r_options, r_steps, r_echo), (l_options, l_steps, l_echo) = got
    assert_same(r_options, l_options)
    assert [type(a) for a in r_steps] == [type(a) for a in l_steps] == [np.int64, int, np.int8]
    assert r_steps == l_steps
    r_args, r_kwargs, r_types, r_kwtypes = r_echo
    # the wire has no tuples, OrderedDicts or enums: they arrive as lists, dicts and ints
    assert r_types == ["float64", "int64", "float32", "float16", "bool", "int", "int"]
    assert l_echo[2][:5] == r_types[:5]
    assert pickle.dumps(list(r_args[:5])) == pickle.dumps(list(args[:5]))  # bit for bit, the NaN's payload too
    assert list(r_args[5:]) == [3, 2**70] and r_kwargs == {"d": {"b": np.float64(2)}, "t": [np.uint8(1), "x"]}
    assert type(r_kwargs["d"]["b"]) is np.float64 and type(r_kwargs["t"][0]) is np.uint8
    remote.close()
    local.close()
