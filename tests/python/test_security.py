"""Secure defaults (docs/reliability.md): each test tries to get past one and fails."""
import os
import stat

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

import gymfarm
from farm_fixture import FarmProcess


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    f = FarmProcess(tmp_path_factory.mktemp("locked"), workers=2, args=["--require-token"])
    yield f
    assert f.stop() == 0


@pytest.fixture(scope="module")
def open_farm(tmp_path_factory):
    f = FarmProcess(tmp_path_factory.mktemp("open"), workers=2, args=["--allow-origin", "http://app.example:8080"])
    yield f
    assert f.stop() == 0


def base(f):
    return f.rest_url.removesuffix("/v1/")


def test_token_is_random_and_owner_only(locked):
    assert len(locked.token) == 32 and int(locked.token, 16) >= 0
    path = locked.runtime_dir / "token"
    assert path.read_text() == locked.token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_native_clients_need_the_token(locked, monkeypatch):
    monkeypatch.delenv("GYMFARM_TOKEN", raising=False)
    with pytest.raises(gymfarm.Unauthorized):
        gymfarm.connect(locked.endpoint)
    with pytest.raises(gymfarm.Unauthorized):
        gymfarm.connect(locked.endpoint, token="0" * 32)
    with gymfarm.connect(locked.endpoint, token=locked.token) as farm:
        env = farm.make("CartPole-v1")
        env.reset(seed=0)
        env.close()
    monkeypatch.setenv("GYMFARM_TOKEN", locked.token)
    with gymfarm.connect(locked.endpoint) as farm:
        assert farm.ping()


def test_native_requests_before_hello_are_refused(locked):
    import struct

    import msgpack
    import zmq

    s = zmq.Context.instance().socket(zmq.DEALER)
    s.connect(locked.endpoint)
    s.send_multipart([b"make", b"", struct.pack("<Q", 1), msgpack.packb({"env_id": "CartPole-v1"})])
    assert s.poll(5000)
    rid, status, body = s.recv_multipart()
    assert status == b"err" and msgpack.unpackb(body)["code"] == "unauthorized"
    s.close(0)


def test_rest_needs_the_token(locked):
    r = requests.get(base(locked) + "/v1/envs/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "token" in r.json()["message"]
    assert requests.get(base(locked) + "/v1/envs/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    bearer = {"Authorization": f"Bearer {locked.token}"}
    assert requests.get(base(locked) + "/v1/envs/", headers=bearer).status_code == 200
    with_password = base(locked).replace("http://", f"http://:{locked.token}@")
    assert requests.get(with_password + "/v1/envs/").status_code == 200
    assert requests.get(base(locked) + f"/v1/envs/?token={locked.token}").status_code == 200
    r = requests.post(base(locked) + f"/v1/envs/?token={locked.token}", json={"env_id": "CartPole-v0"})
    assert r.status_code == 200


def test_websocket_needs_the_token(locked):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(locked.gymie_url, open_timeout=5)
    assert e.value.response.status_code == 401
    with ws_connect(f"{locked.gymie_url}?token={locked.token}") as ws:
        ws.send('{"method": "make", "params": {"env_id": "CartPole-v1"}}')
        assert len(ws.recv(timeout=30)) == 32


def test_status_reads_the_token_file(locked):
    import subprocess

    from farm_fixture import GYMFARM

    r = subprocess.run([str(GYMFARM), "status", "--native-port", str(locked.port), "--runtime-dir",
                        str(locked.runtime_dir)], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if k != "GYMFARM_TOKEN"})
    assert r.returncode == 0 and "WORKER" in r.stdout


def test_host_header_must_be_local(open_farm):
    ok = requests.get(base(open_farm) + "/v1/envs/")
    assert ok.status_code == 200
    r = requests.get(base(open_farm) + "/v1/envs/", headers={"Host": "attacker.example"})
    assert r.status_code == 403 and "Host" in r.json()["message"]
    import socket

    port = int(open_farm.gymie_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /gym HTTP/1.1\r\nHost: rebound.example:5000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 403")


def test_cross_site_origins_are_refused(open_farm):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(open_farm.gymie_url, origin="http://evil.example", open_timeout=5)
    assert e.value.response.status_code == 403
    r = requests.post(base(open_farm) + "/v1/envs/", json={"env_id": "CartPole-v0"},
                      headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    with ws_connect(open_farm.gymie_url, origin="http://localhost:3000") as ws:
        ws.ping().wait(5)
    with ws_connect(open_farm.gymie_url, origin="http://app.example:8080") as ws:  # --allow-origin
        ws.ping().wait(5)
    assert "Access-Control-Allow-Origin" not in requests.options(base(open_farm) + "/v1/envs/").headers


def test_make_kwargs_allow_list(open_farm):
    with gymfarm.connect(open_farm.endpoint) as farm:
        with pytest.raises(gymfarm.BadRequest, match="render_mode 'human'"):
            farm.make("CartPole-v1", render_mode="human")
        with pytest.raises(gymfarm.BadRequest, match="looks like a path"):
            farm.make("FrozenLake-v1", desc=["SFFF", "/etc/passwd", "FFFH", "HFFG"])
        with pytest.raises(gymfarm.BadRequest, match="--import"):
            farm.make("os:system")
        env = farm.make("FrozenLake-v1", render_mode="ansi", is_slippery=False)
        env.close()


def test_token_file_option(tmp_path):
    token_file = tmp_path / "my-token"
    token_file.write_text("a" * 40 + "\n")
    token_file.chmod(0o600)
    f = FarmProcess(tmp_path / "farm", workers=1, args=["--token-file", str(token_file)])
    try:
        assert f.token == "a" * 40
        with gymfarm.connect(f.endpoint, token="a" * 40) as farm:
            assert farm.ping()
    finally:
        assert f.stop() == 0


def test_per_client_instance_and_in_flight_limits(tmp_path):
    f = FarmProcess(tmp_path, workers=6, args=["--max-instances-per-client", "2", "--max-inflight-per-client", "2"])
    try:
        with f.connect() as a, f.connect() as b:
            e1, e2 = a.make("CartPole-v1"), a.make("CartPole-v1")
            with pytest.raises(gymfarm.Overloaded, match="--max-instances-per-client") as e:
                a.make("CartPole-v1")
            assert e.value.details["limit"] == 2
            e3 = b.make("CartPole-v1")  # another client has its own allowance
            e1.close()
            e4 = a.make("CartPole-v1")  # a closed instance frees a place
            for env in (e2, e3, e4):
                env.reset(seed=0)
            out = b.step_batch([(e3.instance_id, 0), (e3.instance_id, 1), (e3.instance_id, 0)])
            assert isinstance(out[0], dict) and isinstance(out[1], dict)
            assert isinstance(out[2], gymfarm.Overloaded) and "--max-inflight-per-client" in str(out[2])
            assert isinstance(b.step_batch([(e3.instance_id, 0)])[0], dict)  # answered requests free their slots
    finally:
        assert f.stop() == 0
