"""Finding: idle connections locked everyone out. 2,000 idle connections, 1,100 slowloris
connections or 1,030 idle WebSockets from one attacker got every well-behaved client a 503 or a
reset on both HTTP ports. Now one remote address may hold at most --max-connections-per-client
connections: the attacker's extra ones are refused at once (503 and a close), and a client on
another address is served on both HTTP ports and the WebSocket while the flood is held. The total
limit (--max-connections) refuses new connections the same way while existing ones keep being
served."""
import json
import socket
import time
from urllib.parse import urlparse

import pytest
from native_raw import read_http_response
from websockets.sync.client import connect as ws_connect

PER_CLIENT = 8
ATTACKER = "127.0.0.1"
VICTIM = "127.0.0.2"


def addr(url):
    u = urlparse(url)
    return u.hostname, u.port


def open_from(source, url):
    s = socket.create_connection(addr(url), timeout=5, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def refused(s, within=3.0):
    """True when the farm answers 503 or closes the connection within `within` seconds."""
    s.settimeout(within)
    try:
        data = s.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def get(s, url, path):
    host, port = addr(url)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    s.settimeout(10)
    head, body = read_http_response(s)
    return head.split("\r\n")[0], body


def served_everywhere(farm, source):
    """A well-behaved client on `source`: REST on both ports, a Gymie make/reset/step."""
    for url, path in ((farm.rest_url, "/v1/envs/"), (farm.gymnasium_url, "/v1/envs/")):
        s = open_from(source, url)
        try:
            status, _ = get(s, url, path)
            assert status.startswith("HTTP/1.1 200"), (url, status)
        finally:
            s.close()
    s = open_from(source, farm.gymie_url)
    with ws_connect(farm.gymie_url, sock=s, open_timeout=10) as ws:
        ws.send('{"method": "make", "params": {"env_id": "CartPole-v1"}}')
        iid = ws.recv(timeout=30)  # make's reply: the bare instance id
        assert len(iid) == 32, iid
        ws.send(json.dumps({"method": "reset", "params": {"instance_id": iid}}))
        ws.recv(timeout=30)
        ws.send(json.dumps({"method": "step", "params": {"instance_id": iid, "action": 0}}))
        assert json.loads(ws.recv(timeout=30))[1] == 1.0  # [obs, reward, done, info]
        ws.send(json.dumps({"method": "close", "params": {"instance_id": iid}}))
        ws.recv(timeout=30)


@pytest.fixture
def farm(start_farm):
    return start_farm(workers=1, args=["--max-connections-per-client", str(PER_CLIENT)])


def test_one_address_cannot_lock_others_out(farm):
    held = []
    try:
        # the attacker fills its share with idle connections on both ports ...
        for i in range(PER_CLIENT):
            held.append(open_from(ATTACKER, farm.rest_url if i % 2 else farm.gymnasium_url))
        time.sleep(0.3)  # let the farm accept them all
        # ... and every further connection, idle or slowloris, on either port, is refused at once
        for i in range(40):
            s = open_from(ATTACKER, farm.gymie_url if i % 2 else farm.gymnasium_url)
            if i % 3 == 0:
                try:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                except OSError:
                    pass
            assert refused(s), f"connection {PER_CLIENT + i + 1} from one address was not refused"
            s.close()
        # the held ones are still open (not refused) ...
        for s in held:
            s.settimeout(0.05)
            with pytest.raises(socket.timeout):
                s.recv(1)
        # ... and a client on another address is served everywhere
        served_everywhere(farm, VICTIM)
        assert "refused" in farm.log() and "--max-connections-per-client" in farm.log()  # the operator is told
    finally:
        for s in held:
            s.close()
    # once the attacker's connections close, it is admitted again
    time.sleep(0.3)
    served_everywhere(farm, ATTACKER)


def test_idle_websockets_count_against_the_limit(farm):
    held = []
    try:
        for _ in range(PER_CLIENT):
            s = open_from(ATTACKER, farm.gymie_url)
            held.append(ws_connect(farm.gymie_url, sock=s, open_timeout=10))
        s = open_from(ATTACKER, farm.gymie_url)
        assert refused(s), "a WebSocket past the per-client limit was not refused"
        s.close()
        served_everywhere(farm, VICTIM)
    finally:
        for ws in held:
            ws.close()


def test_the_total_limit_refuses_new_connections_and_serves_existing_ones(start_farm):
    total = 10
    farm = start_farm(workers=1, args=["--max-connections", str(total), "--max-connections-per-client", "0"])
    keep = open_from(VICTIM, farm.rest_url)  # a well-behaved keep-alive client, already connected
    assert get(keep, farm.rest_url, "/v1/envs/")[0].startswith("HTTP/1.1 200")
    held = []
    try:
        for i in range(total - 1):
            held.append(open_from(f"127.0.0.{3 + i}", farm.rest_url))
        time.sleep(0.3)
        for i in range(6):
            s = open_from(f"127.0.1.{1 + i}", farm.gymnasium_url if i % 2 else farm.rest_url)
            assert refused(s), "a connection past --max-connections was not refused"
            s.close()
        assert "(--max-connections)" in farm.log()
        for _ in range(3):  # the existing client is still served, on the same connection
            assert get(keep, farm.rest_url, "/v1/envs/")[0].startswith("HTTP/1.1 200")
        held.pop().close()
        time.sleep(0.3)
        s = open_from("127.0.2.1", farm.rest_url)
        try:
            assert get(s, farm.rest_url, "/v1/envs/")[0].startswith("HTTP/1.1 200"), "not admitted after a close"
        finally:
            s.close()
    finally:
        keep.close()
        for s in held:
            s.close()


def test_the_default_per_client_limit(start_farm):
    """With no flags: one address holds 64 connections at most (the 1,024-connection gateway of
    old admitted all of them, until nobody else could connect)."""
    farm = start_farm(workers=1)
    held = []
    try:
        for _ in range(64):
            held.append(open_from(ATTACKER, farm.rest_url))
        time.sleep(0.3)
        extra = [open_from(ATTACKER, farm.rest_url) for _ in range(4)]
        for s in extra:
            assert refused(s), "connection 65 from one address was not refused"
            s.close()
        s = open_from(VICTIM, farm.rest_url)
        try:
            assert get(s, farm.rest_url, "/v1/envs/")[0].startswith("HTTP/1.1 200")
        finally:
            s.close()
    finally:
        for s in held:
            s.close()
