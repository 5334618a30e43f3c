"""Version skew: a client on Gymnasium 1.2.2 against workers on the default Gymnasium (1.4), and a
1.4 client against workers on 1.2.2. make, reset(seed) and step trajectories of CartPole and
Pendulum equal the in-process ones of the side the env runs on (the workers'), and the spaces
decode to what the client's own gymnasium.make gives.

Gymnasium 1.2.2 lives beside the venv (``<venv>/compat/gymnasium-1.2.2``, installed by
scripts/install with ``pip install --target ... --no-deps``; its dependencies come from the venv)
and is put first on the path: PYTHONPATH for the workers and for a client subprocess. This file
is also that subprocess: ``python test_version_skew.py remote|local ARGS_JSON`` prints JSON."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

OLD = "1.2.2"
COMPAT = Path(sys.prefix) / "compat" / f"gymnasium-{OLD}"
ROOT = Path(__file__).resolve().parents[2]
SEEDS = {"CartPole-v1": 17, "Pendulum-v1": 23}
STEPS = 60


def actions_for(env_id):
    """The same actions on both sides, made without any Gymnasium sampler."""
    rng = np.random.default_rng(99)
    if env_id == "CartPole-v1":
        return [int(a) for a in rng.integers(0, 2, STEPS)]
    return [[float(np.float32(a))] for a in rng.uniform(-2.0, 2.0, STEPS)]


def _to_action(env_id, a):
    return a if env_id == "CartPole-v1" else np.asarray(a, dtype=np.float32)


def run_trajectory(env, env_id):
    """reset(seed) then the actions: obs as (dtype, list), reward, terminated, truncated; the
    episode is reset with the next seed when it ends."""
    seed = SEEDS[env_id]
    obs, _ = env.reset(seed=seed)
    out = [[str(obs.dtype), obs.tolist()]]
    for a in actions_for(env_id):
        obs, reward, terminated, truncated, _ = env.step(_to_action(env_id, a))
        out.append([str(obs.dtype), obs.tolist(), float(reward), bool(terminated), bool(truncated)])
        if terminated or truncated:
            seed += 1
            obs, _ = env.reset(seed=seed)
            out.append([str(obs.dtype), obs.tolist()])
    return out


def spaces_match(remote, local):
    """Whether a farm env's spaces decoded to what this side's gymnasium.make has."""
    for r, w in ((remote.observation_space, local.observation_space), (remote.action_space, local.action_space)):
        if type(r) is not type(w) or r != w:
            return False
        if hasattr(w, "dtype") and r.dtype != w.dtype:
            return False
        if hasattr(w, "low") and not (np.array_equal(r.low, w.low) and np.array_equal(r.high, w.high)):
            return False
    return True


def side(mode, args):
    """One side's results, for this process's Gymnasium: ``local`` (in-process trajectories) or
    ``remote`` (trajectories and space checks through the farm at args["endpoint"])."""
    import gymnasium as gym

    out = {"gymnasium": gym.__version__, "trajectories": {}, "spaces": {}}
    if mode == "remote":
        import gymfarm

        farm = gymfarm.connect(args["endpoint"])
        probe = farm.make("gymfarm_skew/Version-v0")
        out["workers_gymnasium"] = probe.get_wrapper_attr("gymnasium_version")
        probe.close()
    for env_id in SEEDS:
        env = farm.make(env_id) if mode == "remote" else gym.make(env_id)
        if mode == "remote":
            local = gym.make(env_id)
            out["spaces"][env_id] = spaces_match(env, local)
            local.close()
        out["trajectories"][env_id] = run_trajectory(env, env_id)
        env.close()
    if mode == "remote":
        farm.close()
    return out


PROBE = textwrap.dedent('''
    """Registers gymfarm_skew/Version-v0, whose env tells which Gymnasium the worker runs."""
    import gymnasium as gym


    class VersionEnv(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(1)
        gymnasium_version = gym.__version__

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return 0, {}

        def step(self, action):
            return 0, 0.0, True, False, {}


    gym.register("gymfarm_skew/Version-v0", entry_point=VersionEnv)
''')


if __name__ == "__main__":  # the other side of a skew test, run in a subprocess
    print(json.dumps(side(sys.argv[1], json.loads(sys.argv[2]))))
    sys.exit(0)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def compat():
    """The path that holds Gymnasium 1.2.2 (installed here, as scripts/install does, if missing)."""
    if not (COMPAT / "gymnasium" / "__init__.py").is_file():
        tmp = COMPAT.with_name(COMPAT.name + ".tmp")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp),
                            f"gymnasium=={OLD}"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"Gymnasium {OLD} is not at {COMPAT} and pip could not install it (no PyPI?): "
                        f"{r.stderr.strip()[-300:]}")
        os.replace(tmp, COMPAT)
    return COMPAT


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("skew-probe")
    (d / "gymfarm_skew_probe.py").write_text(PROBE)
    return d


def other_side(compat, mode, args):
    """Runs side() in a subprocess whose Gymnasium is 1.2.2."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(compat), str(ROOT / "python"), str(ROOT / "tests" / "support")])
    r = subprocess.run([sys.executable, __file__, mode, json.dumps(args)], capture_output=True, text=True,
                       env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_same_trajectories(got, want):
    assert set(got) == set(want) == set(SEEDS)
    for env_id in SEEDS:
        assert len(got[env_id]) == len(want[env_id]) > STEPS, env_id
        for t, (g, w) in enumerate(zip(got[env_id], want[env_id], strict=True)):
            assert g == w, f"{env_id} step {t}: farm {g} != in-process {w}"


def test_client_on_1_2_with_workers_on_1_4(compat, probe_dir, start_farm):
    import gymnasium as gym

    assert gym.__version__.startswith("1.4"), "the default install runs Gymnasium 1.4"
    farm = start_farm(workers=3, args=["--import", "gymfarm_skew_probe"], env_vars={"PYTHONPATH": str(probe_dir)})
    client = other_side(compat, "remote", {"endpoint": farm.endpoint})
    assert client["gymnasium"] == OLD
    assert client["workers_gymnasium"] == gym.__version__
    assert client["spaces"] == {env_id: True for env_id in SEEDS}
    assert_same_trajectories(client["trajectories"], side("local", {})["trajectories"])


def test_client_on_1_4_with_workers_on_1_2(compat, probe_dir, start_farm):
    import gymnasium as gym

    assert gym.__version__.startswith("1.4")
    farm = start_farm(workers=3, args=["--import", "gymfarm_skew_probe"],
                      env_vars={"PYTHONPATH": os.pathsep.join([str(compat), str(probe_dir)])})
    client = side("remote", {"endpoint": farm.endpoint})
    assert client["gymnasium"] == gym.__version__
    assert client["workers_gymnasium"] == OLD
    assert client["spaces"] == {env_id: True for env_id in SEEDS}
    workers_side = other_side(compat, "local", {})
    assert workers_side["gymnasium"] == OLD
    assert_same_trajectories(client["trajectories"], workers_side["trajectories"])
