"""A farm env behaves as ``gymnasium.make`` in this process: actions reach ``env.step`` as sent
(dtype kept, values outside the space passed to the env), vector batches are checked as
SyncVectorEnv checks them, and the env's spec, attributes and warnings come through."""
import gymnasium as gym
import numpy as np
import pytest

import gymfarm
import gymfarm_testenvs  # noqa: F401  (registers gymfarm_test/* in this process too)
from trees import assert_same


@pytest.fixture(scope="module")
def farm_proc(tmp_path_factory):
    from farm_fixture import FarmProcess, pid_alive, wait_until

    f = FarmProcess(tmp_path_factory.mktemp("inproc"), workers=6)
    yield f
    workers = f.worker_pids()
    assert f.stop() == 0, f.log()
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10), "worker processes left behind"


@pytest.fixture(scope="module")
def farm(farm_proc):
    f = farm_proc.connect()
    yield f
    f.close()


def _gaussian_trajectory(make, env_id, seed, steps, scale):
    """Unclipped float64 Gaussian actions (most of them outside the Box): every obs, reward and flag."""
    env = make(env_id)
    rng = np.random.default_rng(seed)
    out = []
    try:
        obs, _ = env.reset(seed=seed)
        out.append(obs)
        shape = env.action_space.shape
        for _ in range(steps):
            a = rng.normal(0.0, scale, size=shape)  # float64, often beyond low/high
            obs, reward, terminated, truncated, _ = env.step(a)
            out.append((obs, reward, terminated, truncated))
            if terminated or truncated:
                obs, _ = env.reset()
                out.append(obs)
    finally:
        env.close()
    return out


def _assert_bitwise(remote, local):
    assert len(remote) == len(local)
    for r, loc in zip(remote, local, strict=True):
        if isinstance(loc, tuple):
            (ro, rr, rt, rtr), (lo, lr, lt, ltr) = r, loc
            assert ro.dtype == lo.dtype and ro.tobytes() == lo.tobytes()
            assert np.float64(rr).tobytes() == np.float64(lr).tobytes()
            assert (rt, rtr) == (lt, ltr)
        else:
            assert r.dtype == loc.dtype and r.tobytes() == loc.tobytes()


@pytest.mark.parametrize("env_id,scale", [("Pendulum-v1", 3.0), ("MountainCarContinuous-v0", 2.0)])
def test_gaussian_float64_trajectory_matches_in_process_bit_for_bit(farm, env_id, scale):
    remote = _gaussian_trajectory(farm.make, env_id, 7, 300, scale)
    local = _gaussian_trajectory(gym.make, env_id, 7, 300, scale)
    _assert_bitwise(remote, local)


def test_out_of_bounds_box_action_is_clipped_by_the_env(farm):
    env, local = farm.make("Pendulum-v1"), gym.make("Pendulum-v1")
    try:
        env.reset(seed=3)
        local.reset(seed=3)
        r = env.step(np.array([2.7]))
        loc = local.step(np.array([2.7]))
        assert r[0].tobytes() == loc[0].tobytes() and r[1] == loc[1]
        # a plain list, as a JSON client sends it, goes to the env as a list
        r = env.step([5.0])
        loc = local.step([5.0])
        assert r[0].tobytes() == loc[0].tobytes() and r[1] == loc[1]
    finally:
        env.close()
        local.close()


def test_action_dtype_reaches_the_env(farm):
    env = farm.make("gymfarm_test/ActionEcho-v0")
    try:
        env.reset(seed=0)
        for a in (np.array([0.1, 2.5]), np.array([0.1, 2.5], dtype=np.float32), np.array([1, 2], dtype=np.int16)):
            info = env.step(a)[4]
            assert info["dtype"] == a.dtype.str
            assert info["bytes"] == a.tobytes()
        assert env.step([0.5, 9.0])[4]["type"] == "list"
    finally:
        env.close()


def test_nan_and_true_as_in_process(farm):
    env, local = farm.make("CartPole-v1"), gym.make("CartPole-v1")
    try:
        env.reset(seed=1)
        local.reset(seed=1)
        r, loc = env.step(True), local.step(True)  # in-process: Discrete accepts True as 1
        assert_same(r[0], loc[0])
        with pytest.raises(AssertionError):
            local.step(float("nan"))
        with pytest.raises(gymfarm.EnvError) as e:  # the env's own refusal, with its traceback
            env.step(float("nan"))
        assert e.value.remote_type == "AssertionError"
        assert "cartpole" in e.value.remote_traceback.lower()
        with pytest.raises(gymfarm.EnvError):
            env.step(2)
        env.step(0)  # the instance survives
    finally:
        env.close()
        local.close()

    env, local = farm.make("Pendulum-v1"), gym.make("Pendulum-v1")
    try:
        env.reset(seed=1)
        local.reset(seed=1)
        r, loc = env.step(np.array([np.nan])), local.step(np.array([np.nan]))
        assert r[0].tobytes() == loc[0].tobytes()
    finally:
        env.close()
        local.close()


def test_undecodable_action_is_bad_action(farm):
    import msgpack

    env = farm.make("CartPole-v1")
    try:
        env.reset(seed=0)
        with pytest.raises(gymfarm.BadAction):  # an extension type the protocol does not define
            farm.call("step", env.instance_id, {"action": msgpack.ExtType(9, b"x")})
        with pytest.raises(gymfarm.BadAction):  # an ndarray whose payload is not one
            farm.call("step", env.instance_id, {"action": msgpack.ExtType(1, b"\x93")})
        assert env.step(1)[1] == 1.0
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_vector_batch_of_the_wrong_size_raises_as_sync_vector_env(farm, env_id):
    from gymnasium.vector import SyncVectorEnv

    remote = farm.make_vec(env_id, num_envs=2)
    local = SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)])
    ref = SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)])  # sees only the good batch
    try:
        remote.reset(seed=0)
        local.reset(seed=0)
        ref.reset(seed=0)
        one = local.action_space.sample()[:1]
        three = np.concatenate([local.action_space.sample(), one])
        for bad in (one, three):
            with pytest.raises(ValueError):
                local.step(bad)
            with pytest.raises(ValueError):
                remote.step(bad)
        good = local.action_space.sample()
        # the farm refuses a wrong batch before any sub-env steps (SyncVectorEnv may step some first)
        assert_same(remote.step(good)[:4], ref.step(good)[:4])
    finally:
        remote.close()
        local.close()
        ref.close()


def test_sb3_vec_env_batch_of_the_wrong_size_raises(farm_proc):
    from gymfarm.sb3 import RemoteVecEnv

    venv = RemoteVecEnv("CartPole-v1", num_envs=2, endpoint=farm_proc.endpoint)
    try:
        venv.reset()
        with pytest.raises(ValueError):
            venv.step_async(np.array([1]))
        venv.step_async(np.array([1, 0]))
        obs = venv.step_wait()[0]
        assert obs.shape == (2, 4)
    finally:
        venv.close()


def test_spec_is_the_remote_envs(farm):
    env = farm.make("Pendulum-v1", g=9.81)
    local = gym.make("Pendulum-v1", g=9.81)
    try:
        assert env.spec is not None
        assert env.spec.id == local.spec.id == "Pendulum-v1"
        assert env.spec.max_episode_steps == local.spec.max_episode_steps == 200
        assert env.spec.kwargs == local.spec.kwargs
        assert env.spec.entry_point == local.spec.entry_point
    finally:
        env.close()
        local.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "FrozenLake-v1"])
def test_spec_equals_the_in_process_spec(farm, env_id):
    env, local = farm.make(env_id), gym.make(env_id)
    try:
        assert env.spec == local.spec  # every field, the vector entry point included
    finally:
        env.close()
        local.close()


def test_spec_through_gymnasium_make(farm_proc):
    env = gym.make("gymfarm/CartPole-v1", endpoint=farm_proc.endpoint)
    try:
        assert env.spec.id == "CartPole-v1"
        assert env.spec.max_episode_steps == 500
    finally:
        env.close()


def test_wrapper_attrs_and_method_calls(farm):
    env = farm.make("gymfarm_test/AtariLike-v0", frameskip=3)
    try:
        assert env.get_wrapper_attr("frameskip") == 3
        assert env.unwrapped.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
        assert env.get_wrapper_attr("get_action_meanings")()[0] == "NOOP"
        assert env.has_wrapper_attr("frameskip") and not env.has_wrapper_attr("no_such_attr")
        assert env.set_wrapper_attr("frameskip", 5)
        assert env.get_wrapper_attr("frameskip") == 5
        assert env.spec.kwargs["frameskip"] == 3
        with pytest.raises(AttributeError):
            _ = env.no_such_attr
        # a client-side wrapper that queries the env reaches the remote one
        wrapped = gym.wrappers.RecordEpisodeStatistics(env)
        assert wrapped.get_wrapper_attr("frameskip") == 5
        assert wrapped.set_wrapper_attr("frameskip", 2, force=False)
        assert env.get_wrapper_attr("frameskip") == 2
        assert not env.set_wrapper_attr("no_such_attr", 1, force=False)  # as gymnasium.Env: not set
        assert not env.has_wrapper_attr("no_such_attr")
        # local attributes stay local
        assert env.get_wrapper_attr("action_space") is env.action_space
    finally:
        env.close()


def test_private_names_stay_refused(farm):
    env = farm.make("gymfarm_test/AtariLike-v0")
    try:
        for name in ("_secret", "np_random._bit_generator", "unwrapped.__class__"):
            with pytest.raises(gymfarm.BadRequest):
                env.get_wrapper_attr(name)
            with pytest.raises(gymfarm.BadRequest):
                env.set_wrapper_attr(name, 1)
        with pytest.raises(AttributeError):
            _ = env._secret
    finally:
        env.close()


def test_remote_object_attributes_are_reached_remotely(farm):
    env = farm.make("gymfarm_test/AtariLike-v0")
    try:
        ale = env.unwrapped.ale  # an emulator handle cannot travel: a proxy to the remote one
        assert isinstance(ale, gymfarm.env.RemoteObject)
        assert ale.lives() == 3  # what SB3's EpisodicLifeEnv asks
        assert env.get_wrapper_attr("ale").remaining == 3
        env.set_wrapper_attr("ale.remaining", 1)
        assert ale.lives() == 1
        with pytest.raises(AttributeError):  # a private name never leaves this process
            _ = ale._private
    finally:
        env.close()


def test_worker_warnings_reach_the_client(farm):
    env = farm.make("gymfarm_test/AtariLike-v0")
    try:
        with pytest.warns(UserWarning, match="AtariLike reset warning"):
            env.reset(seed=0)
    finally:
        env.close()


def test_tuples_in_infos_stay_tuples(farm):
    env, local = farm.make("gymfarm_test/AtariLike-v0"), gym.make("gymfarm_test/AtariLike-v0")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, loc = env.reset(seed=0)[1], local.reset(seed=0)[1]
        assert r["pair"] == loc["pair"] and type(r["pair"]) is tuple
        r, loc = env.step(1)[4], local.step(1)[4]
        assert r["pair"] == loc["pair"] == (1, (2.5, "b"))
        assert type(r["pair"]) is tuple and type(r["pair"][1]) is tuple
    finally:
        env.close()
        local.close()


def test_vector_infos_keep_tuples(farm):
    import warnings

    remote = farm.make_vec("gymfarm_test/AtariLike-v0", num_envs=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            remote.reset(seed=0)
        info = remote.step(np.array([0, 1]))[4]
        assert all(type(p) is tuple and type(p[1]) is tuple for p in info["pair"])
    finally:
        remote.close()


def test_deprecated_id_raises_deprecated_env(farm):
    with pytest.raises(gym.error.DeprecatedEnv):
        gym.make("FrozenLake-v0")
    with pytest.raises(gym.error.DeprecatedEnv) as e:
        farm.make("FrozenLake-v0")
    assert isinstance(e.value, gymfarm.BadRequest)
    with pytest.raises(gym.error.NameNotFound):
        farm.make("NoSuchEnvAtAll-v0")


@pytest.mark.parametrize("env_id", ["gymfarm_test/GraphObs-v0", "gymfarm_test/SequenceObs-v0",
                                    "gymfarm_test/OneOfObs-v0"])
def test_graph_sequence_oneof_spaces_pass_check_env(farm, env_id):
    from gymnasium.utils.env_checker import check_env

    env, local = farm.make(env_id), gym.make(env_id)
    try:
        assert env.observation_space == local.observation_space
        assert env.action_space == local.action_space
        check_env(env, skip_render_check=True)
        obs, _ = env.reset(seed=4)
        lobs, _ = local.reset(seed=4)
        assert env.observation_space.contains(obs)
        assert_same(obs, lobs)
        env.action_space.seed(2)
        local.action_space.seed(2)
        for _ in range(5):  # actions of these spaces reach the env's own contains() intact
            r, loc = env.step(env.action_space.sample()), local.step(local.action_space.sample())
            assert env.observation_space.contains(r[0])
            assert_same(r[0], loc[0])
            assert r[1] == loc[1]
    finally:
        env.close()
        local.close()


@pytest.mark.parametrize("envs_per_worker_path", [False, True])
def test_on_crash_reset_replaces_the_crashed_sub_env(farm, envs_per_worker_path):
    remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=3, on_crash="reset")
    remote._vec = envs_per_worker_path  # both step paths: step_batch, and step_vec
    try:
        remote.reset(seed=0)
        remote.step(np.array([0, 0, 0]))
        old = list(remote.instance_ids)
        obs, rew, term, trunc, info = remote.step(np.array([0, 2, 0]))  # 2 segfaults sub-env 1's worker
        assert remote.instance_ids[0] == old[0] and remote.instance_ids[2] == old[2]
        assert remote.instance_ids[1] != old[1]
        assert obs[:, 0].tolist() == [2.0, 0.0, 2.0]  # the new env's reset obs
        assert rew.tolist() == [2.0, 0.0, 2.0]
        assert trunc.tolist() == [False, True, False] and not term.any()
        assert info["crashed"].tolist() == [False, True, False] and info["_crashed"].tolist() == [False, True, False]
        assert info["crash"]["code"][1] == "worker_crashed"
        obs, rew, *_ = remote.step(np.array([0, 0, 0]))  # every sub-env steps on
        assert obs[:, 0].tolist() == [3.0, 1.0, 3.0]
    finally:
        remote.close()


def test_on_crash_default_still_raises(farm):
    remote = farm.make_vec("gymfarm_test/Faulty-v0", num_envs=2)
    try:
        remote.reset(seed=0)
        with pytest.raises(gymfarm.WorkerCrashed):
            remote.step(np.array([0, 2]))
        with pytest.raises(gymfarm.WorkerCrashed):
            remote.step(np.array([0, 0]))
        with pytest.raises(ValueError):
            farm.make_vec("CartPole-v1", num_envs=1, on_crash="ignore")
    finally:
        remote.close()


def test_vector_get_attr_of_a_method_is_callable(farm):
    remote = farm.make_vec("gymfarm_test/AtariLike-v0", num_envs=2)
    try:
        methods = remote.get_attr("get_action_meanings")
        assert all(callable(m) for m in methods)
        assert methods[1]()[0] == "NOOP"
        assert remote.call("get_action_meanings")[0][1] == "FIRE"
    finally:
        remote.close()


def test_vector_deprecated_id_raises_deprecated_env(farm, farm_proc):
    from gymfarm.sb3 import RemoteVecEnv

    with pytest.raises(gym.error.DeprecatedEnv):
        farm.make_vec("FrozenLake-v0", num_envs=2)
    with pytest.raises(gym.error.DeprecatedEnv):
        RemoteVecEnv("FrozenLake-v0", num_envs=2, endpoint=farm_proc.endpoint)


def _rows_equal_reference(got, ids, ref, skip):
    """The rows of a recv (obs, rewards, terminations, truncations, infos, env_ids) for the envs not
    in ``skip`` equal those rows of the reference step; final obs too (same_step autoreset)."""
    obs, rew, term, trunc, info = got
    robs, rrew, rterm, rtrunc, rinfo = ref
    for k, i in enumerate(ids):
        if i in skip:
            continue
        assert obs[k].tobytes() == robs[i].tobytes(), (k, i)
        assert (rew[k], term[k], trunc[k]) == (rrew[i], rterm[i], rtrunc[i]), (k, i)
        if "_final_obs" in rinfo and rinfo["_final_obs"][i]:
            assert info["_final_obs"][k] and info["final_obs"][k].tobytes() == rinfo["final_obs"][i].tobytes()


@pytest.mark.parametrize("when", ["in_flight", "before_send"])
@pytest.mark.parametrize("mode", ["NEXT_STEP", "SAME_STEP", "DISABLED"])
def test_on_crash_reset_in_send_recv(farm, mode, when):
    import os
    import signal

    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from farm_fixture import pid_alive, wait_until

    n, victim, crash_at = 3, 1, 4
    mode = AutoresetMode[mode]
    remote = farm.make_vec("CartPole-v1", num_envs=n, autoreset_mode=mode, on_crash="reset")
    ref = SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(n)], autoreset_mode=mode)
    rng = np.random.default_rng(1)
    try:
        obs, _ = remote.reset(seed=3)
        robs, _ = ref.reset(seed=3)
        assert obs.tobytes() == robs.tobytes()
        crashed = set()
        for t in range(14):
            acts = rng.integers(0, 2, size=n)
            if t == crash_at:
                old = remote.instance_ids[victim]
                pid = next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == old)
                if when == "before_send":  # the worker died after the last recv: the step finds it gone
                    os.kill(pid, signal.SIGKILL)
                    assert wait_until(lambda p=pid: not pid_alive(p), 10)
                    remote.send(acts)
                    got = remote.recv(min_envs=n)
                    parts = [got]
                else:  # the worker dies with the step in flight
                    os.kill(pid, signal.SIGSTOP)
                    try:
                        remote.send(acts)
                        first = remote.recv(min_envs=n - 1, timeout=20)
                        assert victim not in first[5].tolist()
                    finally:
                        os.kill(pid, signal.SIGKILL)
                    parts = [first, remote.recv(min_envs=1, timeout=30)]
                ref_step = ref.step(acts)
                seen = []
                for p in parts:
                    ids = p[5].tolist()
                    _rows_equal_reference(p[:5], ids, ref_step, {victim})
                    seen += ids
                    if victim in ids:
                        k = ids.index(victim)
                        assert p[4]["crashed"][k] and p[4]["_crashed"][k]
                        assert p[4]["crash"]["code"][k] == "worker_crashed"
                        assert p[4]["crash"]["details"]["signal"][k] == signal.SIGKILL
                        assert p[1][k] == 0.0 and p[3][k] and not p[2][k]
                        assert remote.single_observation_space.contains(p[0][k])
                assert sorted(seen) == list(range(n))
                assert remote.instance_ids[victim] != old
                crashed.add(victim)
                last = (np.zeros(n, bool), np.zeros(n, bool))
                for p in parts:
                    for k, i in enumerate(p[5].tolist()):
                        last[0][i], last[1][i] = p[2][k], p[3][k]
                rend = np.logical_or(ref_step[2], ref_step[3])
            else:
                remote.send(acts)
                got = remote.recv(min_envs=n)
                ref_step = ref.step(acts)
                _rows_equal_reference(got[:5], got[5].tolist(), ref_step, crashed)
                last = (np.zeros(n, bool), np.zeros(n, bool))
                for k, i in enumerate(got[5].tolist()):
                    last[0][i], last[1][i] = got[2][k], got[3][k]
                rend = np.logical_or(ref_step[2], ref_step[3])
            if mode == AutoresetMode.DISABLED:  # ended envs are reset by hand, each side its own
                mine = np.logical_or(*last)
                if mine.any():
                    remote.reset(options={"reset_mask": mine})
                if rend.any():
                    ref.reset(options={"reset_mask": rend})
    finally:
        remote.close()
        ref.close()


def test_send_recv_crash_raises_by_default_and_keeps_the_others(farm):
    import os
    import signal

    remote = farm.make_vec("CartPole-v1", num_envs=3)
    try:
        remote.reset(seed=0)
        victim = remote.instance_ids[2]
        pid = next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == victim)
        os.kill(pid, signal.SIGKILL)
        remote.send([0, 1, 0])
        with pytest.raises(gymfarm.WorkerCrashed) as e:
            remote.recv(min_envs=3)
        assert e.value.env_index == 2
        assert sum(isinstance(r, dict) for r in e.value.results) == 2  # the others' results are kept
    finally:
        remote.close()


def test_sticky_action_wrapper_draws_from_the_envs_generator(farm):
    """Gymnasium's StickyAction draws from env.np_random every step: the env's own generator, which
    the env's next (unseeded) reset draws from too. Trajectories equal in-process ones."""
    def run(env):
        env = gym.wrappers.StickyAction(env, repeat_action_probability=0.5, repeat_action_duration=(1, 3))
        rng = np.random.default_rng(4)
        out = [env.reset(seed=9)[0]]
        try:
            for _ in range(120):
                obs, reward, term, trunc, _ = env.step(int(rng.integers(2)))
                out.append(obs)
                if term or trunc:
                    out.append(env.reset()[0])  # unseeded: from where the env's generator stands
        finally:
            env.close()
        return out

    remote, local = run(farm.make("CartPole-v1")), run(gym.make("CartPole-v1"))
    assert len(remote) == len(local) > 121  # episodes ended and were reset on the way
    for r, loc in zip(remote, local, strict=True):
        assert r.tobytes() == loc.tobytes()


def test_on_crash_reset_in_recv_replaces_every_env_of_a_dead_worker(start_farm):
    """With --envs-per-worker one kill takes several sub-envs: one recv replaces each of them."""
    import os
    import signal

    f = start_farm(workers=2, args=["--envs-per-worker", "2", "--max-workers", "3"])
    with f.connect() as farm:
        remote = farm.make_vec("CartPole-v1", num_envs=4, on_crash="reset")
        try:
            remote.reset(seed=0)
            victim = next(w for w in farm.stats()["workers"] if remote.instance_ids[0] in w["instances"])
            doomed = sorted(i for i, iid in enumerate(remote.instance_ids) if iid in victim["instances"])
            assert len(doomed) == 2
            old = list(remote.instance_ids)
            os.kill(victim["pid"], signal.SIGKILL)
            remote.send([0, 1, 0, 1])
            obs, rew, term, trunc, info, ids = remote.recv(min_envs=4, timeout=30)
            ids = ids.tolist()
            for i in range(4):
                k = ids.index(i)
                assert bool(info["crashed"][k]) == (i in doomed)
                assert (remote.instance_ids[i] != old[i]) == (i in doomed)
                if i in doomed:
                    assert rew[k] == 0.0 and trunc[k] and info["crash"]["code"][k] == "worker_crashed"
            remote.send([0, 0, 0, 0])  # every sub-env steps on
            assert sorted(remote.recv(min_envs=4, timeout=30)[5].tolist()) == [0, 1, 2, 3]
        finally:
            remote.close()
