"""The envs the peers' clients use work on a default install (docs/operations.md, "Default envs"):
the Atari envs of ale-py, registered in every worker without --import, over native, REST
(gym-http-api) and Gymie; and MuJoCo rendering headless (MUJOCO_GL=egl by default)."""
import json

import gymnasium as gym
import numpy as np
import pytest
import requests
from websockets.sync.client import connect

import gymfarm

ale_py = pytest.importorskip("ale_py", reason="ale-py is part of the default install (scripts/requirements.txt)")
gym.register_envs(ale_py)

ATARI = ["Pong-v0", "Breakout-v0", "ALE/Pong-v5"]
STEPS = 10


def in_process(env_id, seed, actions):
    """The obs of reset(seed) and of each step, as a gymnasium.make in this process has them."""
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in actions:
            obs, _, terminated, truncated, _ = env.step(a)
            out.append(obs)
            assert not (terminated or truncated)
        return out
    finally:
        env.close()


def assert_frames_equal(got, want):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        g = np.asarray(g)
        assert g.shape == w.shape == (210, 160, 3), t
        assert np.array_equal(g, w), f"obs {t} differs from in-process"


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("default-envs"), workers=3)
    yield f
    assert f.stop() == 0, f.log()


@pytest.fixture(scope="module")
def native(farm):
    c = farm.connect()
    yield c
    c.close()


def test_workers_list_the_atari_ids(native):
    ids = set(native.envs())
    for env_id in ATARI + ["PongNoFrameskip-v4", "ALE/Breakout-v5"]:
        assert env_id in ids


@pytest.mark.parametrize("env_id", ATARI)
def test_native_atari_trajectory_equals_in_process_bit_for_bit(native, env_id):
    rng = np.random.default_rng(5)
    n = gym.make(env_id).action_space.n
    actions = [int(a) for a in rng.integers(0, n, STEPS)]
    want = in_process(env_id, 11, actions)
    env = native.make(env_id)
    try:
        assert env.action_space == gym.spaces.Discrete(n)
        assert env.observation_space == gym.make(env_id).observation_space
        obs, info = env.reset(seed=11)
        assert obs.dtype == np.uint8
        got = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            got.append(obs)
            assert isinstance(info, dict) and "lives" in info
        assert_frames_equal(got, want)
        assert not np.array_equal(got[0], got[-1]) or env_id.startswith("Breakout")  # the game moved
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ATARI)
def test_rest_gym_http_api_atari_make_and_step(farm, env_id):
    base = farm.rest_url.rstrip("/").removesuffix("/v1")
    s = requests.Session()
    r = s.post(base + "/v1/envs/", json={"env_id": env_id, "seed": 11}, timeout=60)
    assert r.status_code == 200, r.text
    iid = r.json()["instance_id"]
    try:
        space = s.get(base + f"/v1/envs/{iid}/action_space/", timeout=30).json()["info"]
        assert space == {"n": gym.make(env_id).action_space.n, "name": "Discrete"}
        got = [np.array(s.post(base + f"/v1/envs/{iid}/reset/", timeout=30).json()["observation"], dtype=np.uint8)]
        for _ in range(STEPS):
            r = s.post(base + f"/v1/envs/{iid}/step/", json={"action": 0}, timeout=30).json()
            assert isinstance(r["reward"], float) and r["done"] is False
            got.append(np.array(r["observation"], dtype=np.uint8))
        assert_frames_equal(got, in_process(env_id, 11, [0] * STEPS))
    finally:
        s.post(base + f"/v1/envs/{iid}/close/", timeout=30)


@pytest.mark.parametrize("env_id", ATARI)
def test_gymie_atari_make_and_step(farm, env_id):
    ws = connect(farm.gymie_url, open_timeout=10, close_timeout=5, max_size=None)

    def send(method, **params):
        ws.send(json.dumps({"method": method, "params": params}))
        frame = ws.recv(timeout=60)
        return frame if method == "make" else json.loads(frame)  # make answers the bare instance id

    try:
        iid = send("make", env_id=env_id, seed=11)
        assert len(iid) == 32 and all(c in "0123456789abcdef" for c in iid), iid
        assert send("action_space", instance_id=iid) == {"name": "Discrete", "n": gym.make(env_id).action_space.n}
        got = [np.array(send("reset", instance_id=iid), dtype=np.uint8)]
        for _ in range(STEPS):
            obs, reward, done, info = send("step", instance_id=iid, action=0)
            assert done is False and isinstance(info, dict)
            got.append(np.array(obs, dtype=np.uint8))
        assert_frames_equal(got, in_process(env_id, 11, [0] * STEPS))
        send("close", instance_id=iid)
    finally:
        ws.close()


# -- Taxi-v3: Gymnasium 1.3 replaced it with Taxi-v4 (the same transitions with default kwargs) --

def taxi_in_process(seed, actions):
    env = gym.make("Taxi-v4" if "Taxi-v4" in gym.registry else "Taxi-v3")
    obs, _ = env.reset(seed=seed)
    out = [int(obs)]
    for a in actions:
        out.append(int(env.step(a)[0]))
    env.close()
    return out


TAXI_ACTIONS = [0, 1, 2, 3, 4, 5, 1, 1, 3, 0]


@pytest.mark.parametrize("env_id", ["Taxi-v3", "Taxi-v2"])
def test_dialects_keep_serving_the_taxi_ids_their_clients_use(farm, env_id):
    base = farm.rest_url.rstrip("/").removesuffix("/v1")
    s = requests.Session()
    iid = s.post(base + "/v1/envs/", json={"env_id": env_id, "seed": 4}, timeout=60).json()["instance_id"]
    got = [s.post(base + f"/v1/envs/{iid}/reset/", timeout=30).json()["observation"]]
    got += [s.post(base + f"/v1/envs/{iid}/step/", json={"action": a}, timeout=30).json()["observation"]
            for a in TAXI_ACTIONS]
    s.post(base + f"/v1/envs/{iid}/close/", timeout=30)
    assert got == taxi_in_process(4, TAXI_ACTIONS)

    ws = connect(farm.gymie_url, open_timeout=10, close_timeout=5)
    try:
        ws.send(json.dumps({"method": "make", "params": {"env_id": env_id, "seed": 4}}))
        iid = ws.recv(timeout=60)
        assert len(iid) == 32, iid
        ws.send(json.dumps({"method": "reset", "params": {"instance_id": iid}}))
        got = [json.loads(ws.recv(timeout=30))]
        for a in TAXI_ACTIONS:
            ws.send(json.dumps({"method": "step", "params": {"instance_id": iid, "action": a}}))
            got.append(json.loads(ws.recv(timeout=30))[0])
        assert got == taxi_in_process(4, TAXI_ACTIONS)
    finally:
        ws.close()


def test_native_taxi_v3_is_deprecated_as_in_process(native):
    if "Taxi-v3" in gym.registry:
        pytest.skip("this Gymnasium still registers Taxi-v3")
    with pytest.raises(gym.error.DeprecatedEnv):
        gym.make("Taxi-v3")
    with pytest.raises(gym.error.DeprecatedEnv):
        native.make("Taxi-v3")


# -- a crash is reported with its own signal, after pygame-ce (Gymnasium 1.4) has rendered ------

def test_segfault_after_a_pygame_render_is_reported_as_sigsegv(start_farm):
    farm = start_farm(workers=1, args=["--envs-per-worker", "2", "--max-workers", "1"])
    c = farm.connect()
    try:
        cartpole = c.make("CartPole-v1", render_mode="rgb_array")  # both envs in the one worker
        cartpole.reset(seed=0)
        assert cartpole.render().shape == (400, 600, 3)  # pygame drew it (and installed its parachute)
        faulty = c.make("gymfarm_test/Faulty-v0")
        faulty.reset(seed=0)
        with pytest.raises(gymfarm.WorkerCrashed) as e:
            faulty.step(2)  # reads address 0
        assert "SIGSEGV" in str(e.value), e.value
    finally:
        c.close()
    assert "Segmentation fault" in farm.log()  # faulthandler's report, with the Python stack


# -- MuJoCo, headless ------------------------------------------------------------------------

@pytest.fixture
def headless(monkeypatch):
    """The farm's environment as on a server: no display, no MUJOCO_GL of the operator's."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


def render_half_cheetah(farm, **kw):
    c = farm.connect()
    try:
        env = c.make("HalfCheetah-v5", render_mode="rgb_array", **kw)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        frame = env.render()
        env.close()
        return frame
    finally:
        c.close()


@pytest.mark.parametrize("mujoco_gl", [None, ""])  # unset, or set empty (which mujoco reads as unset)
def test_half_cheetah_renders_headless_by_default(headless, monkeypatch, start_farm, mujoco_gl, tmp_path):
    pytest.importorskip("mujoco")
    if mujoco_gl is not None:
        monkeypatch.setenv("MUJOCO_GL", mujoco_gl)
    monkeypatch.chdir(tmp_path)  # the farm's working directory, where MuJoCo would write its log
    farm = start_farm(workers=1)
    local = gym.make("HalfCheetah-v5", render_mode="rgb_array")
    want = (local.unwrapped.height, local.unwrapped.width, 3)
    local.close()
    frame = render_half_cheetah(farm)
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.shape == want == (480, 480, 3)  # Gymnasium's MujocoEnv default size
    assert frame.any(), "an all-black frame: nothing was drawn"
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10  # a scene, not one flat colour
    frame = render_half_cheetah(farm, width=640, height=480)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8 and frame.any()
    # MuJoCo 3.16+ warns on Gymnasium 1.4's models and appends each warning to MUJOCO_LOG.TXT
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists(), (tmp_path / "MUJOCO_LOG.TXT").read_text()


def test_operator_mujoco_gl_is_kept(headless, monkeypatch, start_farm):
    """MUJOCO_GL set by the operator wins over the default: the worker's MuJoCo gets that value
    (one it refuses, so the test shows it arrived without depending on which GL libraries exist;
    glfw would leave a MUJOCO_LOG.TXT in the farm's directory)."""
    pytest.importorskip("mujoco")
    monkeypatch.setenv("MUJOCO_GL", "not-a-backend")
    farm = start_farm(workers=1)
    with pytest.raises(gymfarm.EnvError) as e:
        render_half_cheetah(farm)
    assert "MUJOCO_GL" in str(e.value) and "not-a-backend" in str(e.value), e.value
