"""`gymfarm start --import` with Gymie's hooks: the worked example in examples/plugins."""
import json
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from farm_fixture import FarmProcess

PLUGINS = Path(__file__).resolve().parents[3] / "examples" / "plugins"


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    f = FarmProcess(tmp_path_factory.mktemp("hooks"), workers=3, args=["--import", "gymie_plugin"],
                    env_vars={"PYTHONPATH": str(PLUGINS)})
    yield f
    assert f.stop() == 0


def send(ws, method, **params):
    ws.send(json.dumps({"method": method, "params": params}))
    return ws.recv(timeout=30)


def test_registered_env_get_env_params_and_process_step(farm):
    with connect(farm.gymie_url) as ws:
        iid = send(ws, "make", env_id="plugin/Corridor-v0", max_episode_steps=3)
        assert send(ws, "reset", instance_id=iid) == "0"
        assert send(ws, "step", instance_id=iid, action=1) == "[1, 0.0, false, {}]"
        assert send(ws, "step", instance_id=iid, action=1) == "[2, 0.0, false, {}]"
        assert send(ws, "step", instance_id=iid, action=1) == "[3, 0.0, true, {}]"  # max_episode_steps=3 applied
        iid = send(ws, "make", env_id="FrozenLake-v1")
        send(ws, "reset", instance_id=iid)
        frame = send(ws, "step", instance_id=iid, action=1)
        assert frame.endswith(", {}]")  # FrozenLake's info dropped by process_step
        with pytest.raises(ConnectionClosed) as e:
            send(ws, "make", env_id="CartPole-v1", foo=1)
        assert e.value.rcvd.reason == "Parameters `{'env_id': 'CartPole-v1', 'foo': 1}` are wrong"


def test_native_clients_see_the_plugin_envs_too(farm):
    import gymfarm

    with gymfarm.connect(farm.endpoint) as f:
        assert "plugin/Corridor-v0" in f.envs()
        env = f.make("plugin/Corridor-v0")
        assert env.reset(seed=0) == (0, {"note": "start"})
        assert env.step(1)[:3] == (1, 0.0, False)
        env.close()
