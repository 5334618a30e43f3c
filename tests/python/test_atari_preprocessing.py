"""Client-side Atari wrappers around a farm env see what they see in-process: methods that fill
the array they are given in place (ale-py's ``getScreenGrayscale(buf)``, ``getScreenRGB(buf)``)
fill the caller's array through the remote proxy, so gymnasium's AtariPreprocessing gives the same
observations around a farm env as around the env in this process."""
import importlib.util
import warnings

import gymnasium as gym
import numpy as np
import pytest

import gymfarm
import gymfarm_testenvs  # noqa: F401  (registers gymfarm_test/* in this process too)
from gymfarm import env as remote_env

HAVE_ALE = importlib.util.find_spec("ale_py") is not None
HAVE_CV2 = importlib.util.find_spec("cv2") is not None
needs_cv2 = pytest.mark.skipif(not HAVE_CV2, reason="AtariPreprocessing needs opencv-python (cv2), not installed")
needs_ale = pytest.mark.skipif(not HAVE_ALE, reason="ale-py is not installed (pip install ale-py==0.12.1)")

SCREEN = "gymfarm_test/AtariScreen-v0"


@pytest.fixture(scope="module")
def farm_proc(tmp_path_factory):
    from farm_fixture import FarmProcess, pid_alive, wait_until

    args = ["--import", "ale_py"] if HAVE_ALE else []
    f = FarmProcess(tmp_path_factory.mktemp("atari"), workers=4, args=args)
    yield f
    workers = f.worker_pids()
    assert f.stop() == 0, f.log()
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10), "worker processes left behind"


@pytest.fixture(scope="module")
def farm(farm_proc):
    f = farm_proc.connect()
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AtariLike warns on every reset
        yield


def test_in_place_fill_reaches_the_callers_array(farm):
    env, local = farm.make(SCREEN), gym.make(SCREEN)
    try:
        env.reset(seed=0)
        local.reset(seed=0)
        env.step(2)
        local.step(2)
        ale, lale = env.unwrapped.ale, local.unwrapped.ale
        assert isinstance(ale, gymfarm.env.RemoteObject)
        buf, lbuf = np.zeros((21, 16, 3), np.uint8), np.zeros((21, 16, 3), np.uint8)
        ret = ale.getScreenRGB(buf)
        lale.getScreenRGB(lbuf)
        assert lbuf.any() and buf.tobytes() == lbuf.tobytes()
        assert ret.tobytes() == lbuf.tobytes()  # the return value travels as before
        gray = np.zeros((21, 16), np.uint8)
        ale.getScreenGrayscale(out=gray)  # a keyword argument too
        assert gray.tobytes() == lale.getScreenGrayscale().tobytes()
        view = np.zeros((2, 21, 16), np.uint8)  # a view into a larger array is filled where it lies
        ale.getScreenGrayscale(view[1])
        assert view[1].tobytes() == gray.tobytes() and not view[0].any()
        ro = np.zeros((21, 16), np.uint8)
        ro.flags.writeable = False  # a read-only argument is an input: not sent back, not touched
        ale.getScreenGrayscale(ro)
        with pytest.raises(gymfarm.EnvError):  # the remote side gets a writable copy; the env refuses
            ale.getScreenGrayscale(np.zeros((3, 3), np.uint8))
        assert ale.getScreenRGB().shape == (21, 16, 3)  # no array argument: the plain call
        assert not ro.any()
        assert ale.lives() == 3  # what SB3's EpisodicLifeEnv asks still works
    finally:
        env.close()
        local.close()


def test_a_proxy_calls_its_listed_methods_in_one_round_trip(farm):
    env = farm.make(SCREEN)
    try:
        env.reset(seed=0)
        ale = env.unwrapped.ale
        sent = []
        call = env.farm.call
        env.farm.call = lambda verb, *a, **kw: (sent.append(verb), call(verb, *a, **kw))[1]
        try:
            assert ale.lives() == 3
            ale.getScreenGrayscale(np.zeros((21, 16), np.uint8))
            assert sent == ["call", "call"]
            assert ale.remaining == 3  # a plain attribute is still read as what it is
            assert sent[-1] == "get_attr"
        finally:
            del env.farm.call
        reply = farm.call("get_attr", env.instance_id, {"name": "ale"})
        assert {"lives", "getScreenRGB", "getScreenGrayscale"} <= set(reply["methods"])
        assert "remaining" not in reply["methods"] and not any(m.startswith("_") for m in reply["methods"])
    finally:
        env.close()


def test_call_body_names_only_writable_arrays():
    ro = np.zeros(3)
    ro.flags.writeable = False
    w, k = np.zeros(2), np.ones(4)
    body, arrays = remote_env.call_body("ale.f", (1, ro, w, [np.zeros(2)]), {"out": k, "x": 2})
    assert body["outs"] == [2, "out"] and arrays[0] is w and arrays[1] is k
    body, arrays = remote_env.call_body("ale.lives", (), {})
    assert "outs" not in body and arrays == []  # no cost without arrays


def test_copy_back_refuses_a_mismatch():
    mine = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="not copied"):
        remote_env.copy_back([mine], {"outs": [np.ones((3, 2), np.uint8)]})
    with pytest.raises(ValueError, match="not copied"):
        remote_env.copy_back([mine], {"outs": [np.ones((2, 3), np.int16)]})
    with pytest.raises(ValueError, match="filled arrays"):
        remote_env.copy_back([mine], {"value": None})
    assert not mine.any()
    big = np.zeros(3, dtype=">i4")  # a big-endian array travels little-endian and comes back into it
    remote_env.copy_back([big], {"outs": [np.arange(3, dtype="<i4")]})
    assert big.tolist() == [0, 1, 2]


def test_worker_refuses_outs_that_name_no_array(farm):
    env = farm.make(SCREEN)
    try:
        env.reset(seed=0)
        for outs in ([5], ["nokey"], [0, 0], [True], "0", [1]):
            with pytest.raises(gymfarm.BadRequest):
                farm.call("call", env.instance_id, {"name": "ale.getScreenGrayscale",
                                                     "args": [np.zeros((21, 16), np.uint8), 3], "outs": outs})
        r = farm.call("call", env.instance_id, {"name": "ale.getScreenGrayscale",
                                                 "args": [np.zeros((21, 16), np.uint8)], "outs": [0]})
        assert r["outs"][0].tobytes() == r["value"].tobytes()
        # a name that is not a method is read, as call reads it; the arrays come back untouched
        r = farm.call("call", env.instance_id, {"name": "frameskip", "args": [np.arange(3, dtype=np.uint8)],
                                                 "outs": [0]})
        assert r["value"] == 1 and r["outs"][0].tolist() == [0, 1, 2]
    finally:
        env.close()


def test_vector_call_fills_in_place(farm):
    venv = farm.make_vec(SCREEN, num_envs=2)
    try:
        venv.reset(seed=0)
        venv.step(np.array([1, 3]))
        buf = np.zeros((21, 16), np.uint8)
        venv.call("ale.getScreenGrayscale", buf)  # as SyncVectorEnv's loop: the last sub-env's fill
        local = gym.make(SCREEN)
        local.reset(seed=1)
        local.step(3)
        assert buf.tobytes() == local.unwrapped.ale.getScreenGrayscale().tobytes()
        m = venv.get_attr("get_action_meanings")[0]
        assert m()[0] == "NOOP"
        local.close()
    finally:
        venv.close()


def _wrapper_run(env, steps, seed, **kw):
    env = gym.wrappers.AtariPreprocessing(env, **kw)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rng = np.random.default_rng(seed)
    try:
        for _ in range(steps):
            obs, reward, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
            out.append((obs, float(reward), term, trunc))
            if term or trunc:
                obs, _ = env.reset()
                out.append(obs)
    finally:
        env.close()
    return out


def _assert_same_run(remote, local):
    assert len(remote) == len(local)
    for r, loc in zip(remote, local, strict=True):
        if isinstance(loc, tuple):
            assert r[0].dtype == loc[0].dtype and r[0].tobytes() == loc[0].tobytes()
            assert r[1:] == loc[1:]
        else:
            assert r.dtype == loc.dtype and r.tobytes() == loc.tobytes()


@needs_cv2
@pytest.mark.parametrize("grayscale", [True, False])
def test_atari_preprocessing_on_a_test_env(farm, grayscale):
    kw = dict(frame_skip=1, noop_max=0, screen_size=8, grayscale_obs=grayscale)
    remote = _wrapper_run(farm.make(SCREEN), 30, 3, **kw)
    local = _wrapper_run(gym.make(SCREEN), 30, 3, **kw)
    assert any(np.asarray(o[0] if isinstance(o, tuple) else o).any() for o in local)
    _assert_same_run(remote, local)


PONG = dict(frameskip=1, repeat_action_probability=0.0)


@needs_ale
@needs_cv2
@pytest.mark.parametrize("grayscale", [True, False])
def test_atari_preprocessing_on_farm_pong_matches_in_process(farm, grayscale):
    import ale_py

    gym.register_envs(ale_py)
    kw = dict(frame_skip=1, noop_max=0, grayscale_obs=grayscale)
    remote = _wrapper_run(farm.make("ALE/Pong-v5", **PONG), 50, 11, **kw)
    local = _wrapper_run(gym.make("ALE/Pong-v5", **PONG), 50, 11, **kw)
    assert any(np.asarray(o[0] if isinstance(o, tuple) else o).any() for o in local)
    _assert_same_run(remote, local)


@needs_ale
def test_farm_pong_ale_lives_and_screen(farm):
    import ale_py

    gym.register_envs(ale_py)
    env, local = farm.make("ALE/Pong-v5", **PONG), gym.make("ALE/Pong-v5", **PONG)
    try:
        env.reset(seed=5)
        local.reset(seed=5)
        for a in (0, 1, 2, 3):
            env.step(a)
            local.step(a)
        assert env.unwrapped.ale.lives() == local.unwrapped.ale.lives()
        assert "getScreenGrayscale" in env.unwrapped.ale._methods  # ale-py's methods are listed
        assert env.spec == local.spec  # ale_py.vector_env:AtariVectorEnv included
        assert env.unwrapped.get_action_meanings() == local.unwrapped.get_action_meanings()
        buf = np.zeros((210, 160), np.uint8)
        env.unwrapped.ale.getScreenGrayscale(buf)
        assert buf.any() and buf.tobytes() == local.unwrapped.ale.getScreenGrayscale().tobytes()
    finally:
        env.close()
        local.close()


# -- the remote env's generator and frameskip, as client-side wrappers read them ----------------

def test_np_random_is_the_remote_envs_generator(farm):
    env, local = farm.make(SCREEN), gym.make(SCREEN)
    try:
        env.reset(seed=2)
        local.reset(seed=2)
        # the env drew its random start at reset: the generator a wrapper sees has moved on
        assert env.unwrapped.np_random.integers(1000, size=4).tolist() == \
            local.unwrapped.np_random.integers(1000, size=4).tolist()
        # what was drawn here moved the env's own generator, as in-process
        assert env.unwrapped.draw() == local.unwrapped.draw()
        assert env.unwrapped.np_random.random() == local.unwrapped.np_random.random()
        env.step(1)
        local.step(1)
        assert env.unwrapped.draw() == local.unwrapped.draw()
        env.reset()  # an unseeded reset draws again from where the generator stands
        local.reset()
        assert env.unwrapped.np_random.integers(1 << 20) == local.unwrapped.np_random.integers(1 << 20)
        assert env.np_random_seed == local.np_random_seed == 2
        env.unwrapped.np_random = np.random.default_rng(9)  # setting it sets the env's
        local.unwrapped.np_random = np.random.default_rng(9)
        assert env.unwrapped.draw() == local.unwrapped.draw()
        assert env.np_random_seed == local.np_random_seed == -1
        env.reset(seed=3)
        local.reset(seed=3)
        assert env.np_random_seed == local.np_random_seed == 3
        with pytest.raises(ValueError, match="generator"):  # another kind of bit generator cannot travel
            env.unwrapped.np_random = np.random.Generator(np.random.MT19937(1))
    finally:
        env.close()
        local.close()


def test_unseeded_np_random_seed_is_the_remote_envs(farm):
    env = farm.make(SCREEN)
    try:
        env.reset()  # the env made its own generator at its first draw, with a seed of its own
        seed = env.np_random_seed
        assert seed == farm.call("get_attr", env.instance_id, {"name": "np_random_seed"})["value"]
        assert seed >= 0 and env.np_random_seed == seed
        again = np.random.default_rng(seed)
        again.integers(0, 50)  # the random start reset drew
        assert env.unwrapped.np_random.integers(1 << 30) == again.integers(1 << 30)
    finally:
        env.close()


def test_frameskip_is_the_remote_envs(farm):
    env = farm.make(SCREEN)
    try:
        assert getattr(env.unwrapped, "_frameskip", None) == 1
        with pytest.raises(AttributeError):  # readable, not settable
            env.set_wrapper_attr("_frameskip", 4)
        with pytest.raises(gymfarm.BadRequest):
            env._call("set_attr", {"name": "_frameskip", "value": 4})
        with pytest.raises(gymfarm.BadRequest):
            env._call("call", {"name": "_frameskip"})
        assert env._frameskip == 1
    finally:
        env.close()
    cart = farm.make("CartPole-v1")
    try:
        assert getattr(cart.unwrapped, "_frameskip", None) is None  # an env without one
    finally:
        cart.close()


@needs_cv2
def test_atari_preprocessing_defaults_on_a_test_env(farm):
    """frame_skip=4 (needs env.unwrapped._frameskip == 1), noop_max=30 (drawn from the env's
    generator), max-pooling of two in-place fills per step."""
    remote = _wrapper_run(farm.make(SCREEN), 20, 4, screen_size=8)
    local = _wrapper_run(gym.make(SCREEN), 20, 4, screen_size=8)
    _assert_same_run(remote, local)


@needs_ale
@needs_cv2
def test_atari_wrapper_stack_on_farm_pong_matches_in_process(farm):
    """The SB3-style stack from Gymnasium's own wrappers: AtariPreprocessing with its defaults
    (4 skipped frames, up to 30 no-ops) and FrameStackObservation(4)."""
    import ale_py

    gym.register_envs(ale_py)

    def stacked(env):
        env = gym.wrappers.FrameStackObservation(gym.wrappers.AtariPreprocessing(env), 4)
        obs, _ = env.reset(seed=21)
        out = [obs]
        rng = np.random.default_rng(21)
        try:
            for _ in range(25):
                obs, reward, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
                out.append((obs, float(reward), term, trunc))
        finally:
            env.close()
        return out

    _assert_same_run(stacked(farm.make("ALE/Pong-v5", **PONG)), stacked(gym.make("ALE/Pong-v5", **PONG)))


@needs_ale
def test_check_env_passes_on_farm_pong(farm):
    import ale_py
    from gymnasium.utils.env_checker import check_env

    gym.register_envs(ale_py)
    env = farm.make("ALE/Pong-v5", **PONG)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_check_env_passes_on_a_test_env(farm):
    from gymnasium.utils.env_checker import check_env

    env = farm.make(SCREEN)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


@needs_ale
@needs_cv2
def test_life_loss_on_farm_breakout_matches_in_process(farm):
    """terminal_on_life_loss asks ale.lives() after every frame, as SB3's EpisodicLifeEnv does:
    episodes end where they end in-process."""
    import ale_py

    gym.register_envs(ale_py)
    kw = dict(terminal_on_life_loss=True)
    remote = _wrapper_run(farm.make("ALE/Breakout-v5", **PONG), 60, 0, **kw)
    local = _wrapper_run(gym.make("ALE/Breakout-v5", **PONG), 60, 0, **kw)
    assert any(isinstance(o, tuple) and o[2] for o in local)  # a life was lost on the way
    _assert_same_run(remote, local)


@needs_ale
@needs_cv2
def test_atari_preprocessing_through_gymnasium_make(farm_proc):
    """The same through a gymfarm/ id: the wrappers gymnasium.make adds sit between."""
    import ale_py

    gym.register_envs(ale_py)
    name = gymfarm.register_remote("ALE/Pong-v5")
    remote = _wrapper_run(gym.make(name, endpoint=farm_proc.endpoint, **PONG), 15, 8)
    local = _wrapper_run(gym.make("ALE/Pong-v5", **PONG), 15, 8)
    _assert_same_run(remote, local)


def test_a_held_generator_follows_the_env_in_one_round_trip_a_call(farm):
    env, local = farm.make(SCREEN), gym.make(SCREEN)
    try:
        env.reset(seed=6)
        local.reset(seed=6)
        rng, lrng = env.unwrapped.np_random, local.unwrapped.np_random  # held, as a wrapper may
        trips = []
        many, one = env.farm.call_many, env.farm.call
        env.farm.call_many = lambda reqs, *a, **kw: (trips.append([r[0] for r in reqs]), many(reqs, *a, **kw))[1]
        env.farm.call = lambda verb, *a, **kw: (trips.append([verb]), one(verb, *a, **kw))[1]
        try:
            for t in range(4):
                assert rng.integers(1 << 30) == lrng.integers(1 << 30)
                env.step(t % 4)
                local.step(t % 4)
                assert env.unwrapped.draw() == local.unwrapped.draw()
        finally:
            del env.farm.call_many, env.farm.call
        assert env.unwrapped.np_random is rng
        # each request is one round trip: the drawn state ahead, the state after behind (draw() is
        # two: get_attr finds the method, call calls it)
        assert trips[0] == ["set_attr", "step", "get_attr"]
        assert trips[1:3] == [["get_attr", "get_attr"], ["call", "get_attr"]]
        assert len(trips) == 12
    finally:
        env.close()
        local.close()
