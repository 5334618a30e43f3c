"""Finding 4, DNS rebinding: a Host or Origin that merely starts with `127.` was taken as local.
The gateway now parses them (docs/operations.md "Host and Origin"): a rebound name such as
127.attacker.example is refused 403 on REST and on the WebSocket upgrade, while the loopback
names, the 127/8 literals and Gymie's 0.0.0.0 Host are accepted."""
import json
import socket

import pytest
import requests


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("rebinding"), workers=2)
    yield f
    assert f.stop() == 0, f.log()


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def create(port: int, host: str, origin: str = ""):
    """POST /v1/envs/ with exactly this Host (and Origin): (status, json body)."""
    body = json.dumps({"env_id": "CartPole-v1"})
    extra = f"Origin: {origin}\r\n" if origin else ""
    req = (f"POST /v1/envs/ HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(req.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload) if payload.strip() else None


def upgrade(port: int, host: str, origin: str = "") -> bytes:
    extra = f"Origin: {origin}\r\n" if origin else ""
    req = (f"GET /gym HTTP/1.1\r\nHost: {host}\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(req.encode())
        return s.recv(4096)


def close_instance(port, iid):
    requests.post(f"http://127.0.0.1:{port}/v1/envs/{iid}/close/", timeout=30)


ATTACK_HOSTS = ["127.attacker.example", "127.attacker.example:{port}", "127.0.0.1.evil.com:{port}",
                "localhost.evil.com:{port}", "127.0.0.1:{port}@evil.com"]
ATTACK_ORIGINS = ["http://127.evil.com", "http://127.0.0.1.evil.com:{port}", "http://0.0.0.0:{port}", "http://[::]:{port}",
                  "null"]


@pytest.mark.parametrize("host", ATTACK_HOSTS)
def test_rest_refuses_rebound_hosts(farm, host):
    for port in (port_of(farm.rest_url), port_of(farm.gymnasium_url)):
        status, body = create(port, host.format(port=port))
        assert status == 403 and "Host" in body["message"], (host, status, body)


@pytest.mark.parametrize("origin", ATTACK_ORIGINS)
def test_rest_refuses_cross_site_origins(farm, origin):
    port = port_of(farm.rest_url)
    status, body = create(port, f"127.0.0.1:{port}", origin.format(port=port))
    assert status == 403 and "Origin" in body["message"], (origin, status, body)


@pytest.mark.parametrize("host", ATTACK_HOSTS)
def test_websocket_refuses_rebound_hosts(farm, host):
    port = port_of(farm.gymie_url)
    assert upgrade(port, host.format(port=port)).startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("origin", ATTACK_ORIGINS)
def test_websocket_refuses_cross_site_origins(farm, origin):
    port = port_of(farm.gymie_url)
    assert upgrade(port, f"127.0.0.1:{port}", origin.format(port=port)).startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "127.1.2.3:{port}", "localhost:{port}",
                                  "localhost.:{port}", "0.0.0.0:{port}", "[::1]:{port}", "[::]:{port}",
                                  "[::ffff:127.0.0.1]:{port}"])
def test_local_hosts_are_accepted(farm, host):
    port = port_of(farm.rest_url)
    status, body = create(port, host.format(port=port))
    assert status == 200, (host, status, body)
    close_instance(port, body["instance_id"])
    # the Gymie JS client's ws://0.0.0.0:5000/gym, and a local page's Origin
    assert upgrade(port, host.format(port=port), f"http://localhost:{port}").startswith(b"HTTP/1.1 101")
