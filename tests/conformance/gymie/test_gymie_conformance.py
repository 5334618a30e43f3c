"""Gymie conformance (docs/protocols.md §5.1): exact frames and close codes against a real farm."""
import json
import re
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

HEX32 = re.compile(r"^[0-9a-f]{32}$")
FLOAT = re.compile(r"^-?(\d+\.\d+(e[+-]\d+)?|\d+e[+-]\d+)$")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("gymie"), workers=12)
    yield f
    assert f.stop() == 0


@pytest.fixture(scope="module")
def shared_farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("gymie-shared"), workers=3, args=["--gymie-shared-instances"])
    yield f
    assert f.stop() == 0


class Conn:
    def __init__(self, url):
        self.ws = connect(url, open_timeout=10, close_timeout=5, max_size=None)

    def send(self, method, **params):
        self.ws.send(json.dumps({"method": method, "params": params}))
        return self.ws.recv(timeout=30)

    def raw(self, text):
        self.ws.send(text)
        return self.ws.recv(timeout=30)

    def expect_close(self, method, code, reason, raw=None, **params):
        """Sends and asserts the connection closes with code and reason and no text frame came."""
        with pytest.raises(ConnectionClosed) as e:
            self.ws.send(raw if raw is not None else json.dumps({"method": method, "params": params}))
            frame = self.ws.recv(timeout=30)
            pytest.fail(f"got a text frame before the close: {frame!r}")
        assert e.value.rcvd is not None, "no close frame"
        assert (e.value.rcvd.code, e.value.rcvd.reason) == (code, reason)

    def close(self):
        self.ws.close()


@pytest.fixture
def conn(farm):
    c = Conn(farm.gymie_url)
    yield c
    c.close()


def http_get(port, path, headers=""):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body.decode()


def port_of(farm):
    return int(farm.gymie_url.rsplit(":", 1)[1].split("/")[0])


# -- transport -------------------------------------------------------------------------------

def test_t1_other_paths_say_gymie_is_running(farm):
    for path in ["/", "/anything", "/gym/", "/index.html?gym"]:
        head, body = http_get(port_of(farm), path)
        assert head.startswith("HTTP/1.1 200"), head
        assert "Content-Type: text/plain" in head
        assert body == "Gymie is running..."


def test_t2_gym_without_upgrade_is_400_close(farm):
    head, body = http_get(port_of(farm), "/gym")
    assert head.startswith("HTTP/1.1 400")
    assert "Connection: close" in head and body == ""


def test_t3_upgrade_only_at_gym(farm):
    with pytest.raises(InvalidStatus):
        connect(farm.gymie_url.replace("/gym", "/gym/"), open_timeout=5)
    with pytest.raises(InvalidStatus):
        connect(farm.gymie_url.replace("/gym", "/"), open_timeout=5)
    c = Conn(farm.gymie_url)
    with pytest.raises(TimeoutError):
        c.ws.recv(timeout=0.3)  # nothing arrives before the first request
    c.close()


def test_t4_pipelined_and_interleaved(farm):
    a, b = Conn(farm.gymie_url), Conn(farm.gymie_url)
    ia, ib = a.send("make", env_id="CartPole-v1"), b.send("make", env_id="FrozenLake-v1")
    a.send("reset", instance_id=ia)
    b.send("reset", instance_id=ib)
    for _ in range(20):
        a.ws.send(json.dumps({"method": "action_space", "params": {"instance_id": ia}}))
    for i in range(20):
        b.ws.send(json.dumps({"method": "step", "params": {"instance_id": ib, "action": i % 4}}))
    for _ in range(20):
        assert json.loads(a.ws.recv(timeout=30)) == {"name": "Discrete", "n": 2}
    for _ in range(20):
        obs, reward, done, info = json.loads(b.ws.recv(timeout=30))
        assert isinstance(obs, int) and isinstance(done, bool)
    a.close()
    b.close()


def test_t5_ping_pong_and_clean_close(farm):
    c = Conn(farm.gymie_url)
    assert c.ws.ping().wait(5)
    c.ws.close()
    assert c.ws.close_code == 1000


# -- happy path ------------------------------------------------------------------------------

def test_h1_to_h7_cartpole(conn):
    iid = conn.send("make", env_id="CartPole-v1")
    assert HEX32.match(iid)
    frame = conn.send("reset", instance_id=iid)
    assert frame.count(", ") == 3 and frame.startswith("[")
    obs = json.loads(frame)
    assert len(obs) == 4 and all(isinstance(x, float) for x in obs)
    frame = conn.send("step", instance_id=iid, action=0)
    obs, reward, done, info = json.loads(frame)
    assert len(obs) == 4 and all(isinstance(x, float) for x in obs)
    assert re.search(r"\], 1\.0, (false|true), \{", frame)
    assert isinstance(done, bool) and isinstance(info, dict)
    frame = conn.send("step", instance_id=iid, action=1, render=True)
    assert len(json.loads(frame)) == 4
    frame = conn.send("observation_space", instance_id=iid)
    assert frame.startswith('{"name": "Box", "shape": [4], "low": [')
    space = json.loads(frame)
    assert list(space) == ["name", "shape", "low", "high"]
    assert space["high"][1] == 3.4028234663852886e+38 and "3.4028234663852886e+38" in frame
    assert all(lo <= hi for lo, hi in zip(space["low"], space["high"], strict=True))
    assert "4.800000190734863" in frame
    assert conn.send("action_space", instance_id=iid) == '{"name": "Discrete", "n": 2}'
    assert conn.send("action_sample", instance_id=iid) in ("0", "1")


def test_h8_continuous(conn):
    iid = conn.send("make", env_id="MountainCarContinuous-v0")
    assert conn.send("action_space", instance_id=iid) == '{"name": "Box", "shape": [1], "low": [-1.0], "high": [1.0]}'
    sample = json.loads(conn.send("action_sample", instance_id=iid))
    assert len(sample) == 1 and -1 <= sample[0] < 1
    conn.send("reset", instance_id=iid)
    assert len(json.loads(conn.send("step", instance_id=iid, action=[0.5]))) == 4


def test_h9_close_then_close_again(conn):
    iid = conn.send("make", env_id="CartPole-v1")
    assert conn.send("close", instance_id=iid) == "true"
    conn.expect_close("close", 1007, f"Instance `{iid}` not found", instance_id=iid)


def test_h10_make_seed(farm):
    frames = []
    for seed in (42, 42):
        c = Conn(farm.gymie_url)
        iid = c.send("make", env_id="CartPole-v1", seed=seed)
        frames.append(c.send("reset", instance_id=iid))
        c.close()
    assert frames[0] == frames[1]
    c = Conn(farm.gymie_url)
    iid = c.send("make", env_id="CartPole-v1", seed=0)
    assert HEX32.match(iid)
    c.close()


def test_h11_space_names(conn):
    iid = conn.send("make", env_id="gymfarm_test/MultiBinary-v0")
    assert conn.send("action_space", instance_id=iid) == '{"name": "MultiBinary", "n": 5, "shape": [5]}'
    sample = json.loads(conn.send("action_sample", instance_id=iid))
    assert len(sample) == 5 and set(sample) <= {0, 1}
    conn.send("close", instance_id=iid)
    for env_id, space, name in [("gymfarm_test/MultiDiscrete-v0", "action_space", "MultiDiscrete"),
                                ("gymfarm_test/TupleObs-v0", "observation_space", "Tuple"),
                                ("gymfarm_test/DictObs-v0", "observation_space", "Dict")]:
        iid = conn.send("make", env_id=env_id)
        assert conn.send(space, instance_id=iid) == json.dumps({"name": name})
        conn.send("close", instance_id=iid)


def test_h12_discrete_observation_is_a_number(conn):
    iid = conn.send("make", env_id="FrozenLake-v1")
    assert conn.send("reset", instance_id=iid) == "0"
    obs, reward, done, info = json.loads(conn.send("step", instance_id=iid, action=1))
    assert isinstance(obs, int) and isinstance(reward, float)
    tup = conn.send("make", env_id="Blackjack-v1")
    obs = json.loads(conn.send("reset", instance_id=tup))
    assert isinstance(obs, list) and len(obs) == 3


def test_h13_shared_instances_outlive_their_connection(shared_farm):
    a = Conn(shared_farm.gymie_url)
    iid = a.send("make", env_id="CartPole-v1")
    a.close()
    b = Conn(shared_farm.gymie_url)
    assert len(json.loads(b.send("reset", instance_id=iid))) == 4
    b.send("close", instance_id=iid)
    b.close()


def test_h13_default_reaps_a_connections_instances(farm):
    a = Conn(farm.gymie_url)
    iid = a.send("make", env_id="CartPole-v1")
    b = Conn(farm.gymie_url)
    assert len(json.loads(b.send("reset", instance_id=iid))) == 4  # ids are global while A lives
    a.close()
    import time

    time.sleep(0.5)
    b.expect_close("reset", 1007, f"Instance `{iid}` not found", instance_id=iid)


def test_h14_legacy_ids(conn):
    for legacy in ["FrozenLake-v0", "LunarLander-v2", "Taxi-v2", "Blackjack-v0", "Pendulum-v0"]:
        iid = conn.send("make", env_id=legacy)
        assert HEX32.match(iid), legacy
        conn.send("reset", instance_id=iid)
        conn.send("close", instance_id=iid)


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("message,code,reason", [
    ("Wrong JSON", 1003, "Message `Wrong JSON` is invalid"),
    ('{"prop": "value"}', 1003, "Message keys ['prop'] are missing or invalid"),
    ('{"method": "make"}', 1003, "Message keys ['method'] are missing or invalid"),
    ('{"method":"invalid_method","params":{}}', 1007, "Method `invalid_method` not found"),
    ('{"method":"make","params":{}}', 1007, "Parameters `{}` are wrong"),
    ('{"method":"make","params":{"env_id":"malformed"}}', 1007, "Environment `malformed` is malformed"),
    ('{"method":"make","params":{"env_id":"bad string"}}', 1007, "Environment `bad string` is malformed"),
    ('{"method":"make","params":{"env_id":"CartPole-v9"}}', 1007, "Environment `CartPole-v9` is malformed"),
    ('{"method":"make","params":{"env_id":"NotFound-v1"}}', 1007, "Environment `NotFound-v1` not found"),
    ('{"method":"make","params":{"env_id":"CartPole-v1","foo":1}}', 1007,
     "Parameters `{'env_id': 'CartPole-v1', 'foo': 1}` are wrong"),
    ('{"method":"reset","params":{"instance_id":"x","foo":1}}', 1007,
     "Parameters `{'instance_id': 'x', 'foo': 1}` are wrong"),
    ('{"method":"reset","params":[1]}', 1007, "Parameters `[1]` are wrong"),
    ('{"method":"reset","params":null}', 1007, "Parameters `None` are wrong"),
    ('{"method":"reset","params":{"instance_id":"it\'s"}}', 1007, "Instance `it's` not found"),
    ("[]", 1003, "Message `[]` is invalid"),
    ('"x"', 1003, 'Message `"x"` is invalid'),
    ("null", 1003, "Message `null` is invalid"),
])
def test_e1_to_e12_parse_and_dispatch_errors(conn, message, code, reason):
    conn.expect_close(None, code, reason, raw=message)


@pytest.mark.parametrize("method", ["reset", "close", "observation_space", "action_space", "action_sample"])
def test_e9_unknown_instance(conn, method):
    conn.expect_close(method, 1007, "Instance `not_found` not found", instance_id="not_found")


def test_e9_step_unknown_instance(conn):
    conn.expect_close("step", 1007, "Instance `not_found` not found", instance_id="not_found", action=0)


@pytest.mark.parametrize("action,shown", [(-123, "-123"), ("invalid_action", "invalid_action"), (1.0, "1.0"),
                                          ([1, 0], "[1, 0]")])
def test_e8_wrong_actions(farm, action, shown):
    c = Conn(farm.gymie_url)
    iid = c.send("make", env_id="CartPole-v1")
    c.send("reset", instance_id=iid)
    c.expect_close("step", 1007, f"Action `{shown}` is wrong", instance_id=iid, action=action)


def test_e13_long_reasons_are_cut_at_a_utf8_boundary(conn):
    message = "é" * 500
    with pytest.raises(ConnectionClosed) as e:
        conn.ws.send(message)
        conn.ws.recv(timeout=30)
    reason = e.value.rcvd.reason
    assert e.value.rcvd.code == 1003
    assert reason.startswith("Message `éé") and len(reason.encode()) <= 123


def test_e14_env_that_raises_on_reset_and_neighbours_survive(farm):
    other = Conn(farm.gymie_url)
    oid = other.send("make", env_id="CartPole-v1")
    c = Conn(farm.gymie_url)
    iid = c.send("make", env_id="gymfarm_test/Faulty-v0")
    c.send("reset", instance_id=iid)
    c.expect_close("step", 1007, "Action `1` is wrong", instance_id=iid, action=1)
    assert len(json.loads(other.send("reset", instance_id=oid))) == 4
    other.close()


def test_e15_segfault_during_step(farm):
    other = Conn(farm.gymie_url)
    oid = other.send("make", env_id="CartPole-v1")
    other.send("reset", instance_id=oid)
    c = Conn(farm.gymie_url)
    iid = c.send("make", env_id="gymfarm_test/Faulty-v0")
    c.send("reset", instance_id=iid)
    with pytest.raises(ConnectionClosed) as e:
        c.ws.send(json.dumps({"method": "step", "params": {"instance_id": iid, "action": 2}}))
        c.ws.recv(timeout=30)
    assert e.value.rcvd.code == 1007
    assert e.value.rcvd.reason.startswith("Unknonwn error: worker") and "SIGSEGV" in e.value.rcvd.reason
    for _ in range(10):
        assert len(json.loads(other.send("step", instance_id=oid, action=0))) == 4
    other.close()


def test_limits_oversized_frame_and_deep_nesting(farm):
    c = Conn(farm.gymie_url)
    with pytest.raises(ConnectionClosed) as e:
        c.ws.send("[" * 100 + "]" * 100)
        c.ws.recv(timeout=30)
    assert e.value.rcvd.code == 1003
    c = Conn(farm.gymie_url)
    with pytest.raises(ConnectionClosed) as e:
        c.ws.send("x" * (5 << 20))
        c.ws.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    c = Conn(farm.gymie_url)
    with pytest.raises(ConnectionClosed) as e:
        c.ws.send(b"\xff\xfe not utf-8", text=True)
        c.ws.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1007
    ok = Conn(farm.gymie_url)  # the gateway keeps serving everyone else
    assert HEX32.match(ok.send("make", env_id="CartPole-v1"))
    ok.close()


def test_node_client_flows(farm):
    """The Gymie-Client test flows, run by a Node client with the same single-pending-request
    semantics as Gymie-Client 0.5.1."""
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    assert node, "node is needed for the Gymie client flows"
    with socket.socket() as s:  # a port nobody listens on, for "server down"
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    here = Path(__file__).parent
    r = subprocess.run([node, "--experimental-websocket", "--no-warnings", str(here / "flows.mjs"), farm.gymie_url,
                        f"ws://127.0.0.1:{dead}/gym"], capture_output=True, text=True, timeout=120)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "14 passed, 0 failed"


def test_time_limit_truncation_says_so_in_the_info(conn):
    """gym's TimeLimit (Gymie's gym 0.17) put "TimeLimit.truncated": true in the info of the step
    that hit the limit; MountainCar pushed nowhere runs into its 200-step limit."""
    iid = conn.send("make", env_id="MountainCar-v0", seed=0)
    conn.send("reset", instance_id=iid)
    for t in range(1, 201):
        obs, reward, done, info = json.loads(conn.send("step", instance_id=iid, action=1))
        if t < 200:
            assert not done and "TimeLimit.truncated" not in info
    assert done and info["TimeLimit.truncated"] is True
    assert conn.send("close", instance_id=iid) == "true"
