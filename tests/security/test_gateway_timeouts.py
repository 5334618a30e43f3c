"""Finding: the gateway's timeouts did not work. A connection that never sent a byte, one idle
after a request and one stopped mid-headers were still open long past the idle timeout, and a
WebSocket had no idle timeout at all; a WebSocket the farm closed stayed open for as long as the
peer did not echo the close. Each test holds one such connection against a farm with short
timeouts and checks the farm closes it within the bound (and not before it)."""
import base64
import os
import socket
import time
from urllib.parse import urlparse

import pytest
from native_raw import read_http_response

IDLE = 2     # --http-idle-timeout
HEADER = 2   # --http-header-timeout
SLACK = 2.5  # scheduling and Beast's timer granularity


@pytest.fixture
def farm(start_farm):
    return start_farm(workers=1, args=["--http-idle-timeout", str(IDLE), "--http-header-timeout", str(HEADER)])


def addr(url):
    u = urlparse(url)
    return u.hostname, u.port


def connect(url):
    s = socket.create_connection(addr(url), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def seconds_until_closed(s, limit):
    """Reads (and discards) until the farm closes the connection; the seconds that took, or None
    when it was still open after `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        s.settimeout(max(0.05, limit - (time.monotonic() - t0)))
        try:
            data = s.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
        if not data:
            return time.monotonic() - t0
    return None


def ws_handshake(url):
    host, port = addr(url)
    s = connect(url)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /gym HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head, _ = read_http_response(s)
    assert head.startswith("HTTP/1.1 101"), head
    return s


def ws_text_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_connection_that_never_sends_is_closed(farm):
    s = connect(farm.gymie_url)
    took = seconds_until_closed(s, IDLE + SLACK)
    assert took is not None, f"still open after {IDLE + SLACK} s (--http-idle-timeout {IDLE})"
    assert took >= IDLE - 0.5, f"closed after {took:.2f} s, before the idle timeout"
    s.close()


def test_a_keep_alive_connection_idle_after_a_request_is_closed(farm):
    host, port = addr(farm.rest_url)
    s = connect(farm.rest_url)
    for _ in range(2):  # requests closer together than the timeout keep the connection
        s.sendall(f"GET /v1/envs/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head, _ = read_http_response(s)
        assert head.startswith("HTTP/1.1 200"), head
        time.sleep(IDLE / 2)
    took = seconds_until_closed(s, IDLE + SLACK)
    assert took is not None, f"an idle keep-alive connection was still open after {IDLE + SLACK} s"
    s.close()


def test_a_connection_stopped_mid_headers_is_closed(farm):
    s = connect(farm.gymie_url)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
    took = seconds_until_closed(s, HEADER + SLACK)
    assert took is not None, f"a request stopped mid-headers was still open after {HEADER + SLACK} s"
    s.close()


def test_slowloris_headers_are_cut_at_the_header_deadline(farm):
    """A byte every half second resets no per-read timer: the headers' deadline still ends it."""
    host, port = addr(farm.gymie_url)
    s = connect(farm.gymie_url)
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
    t0 = time.monotonic()
    closed = None
    while time.monotonic() - t0 < HEADER + IDLE + SLACK:
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = time.monotonic() - t0
            break
        s.settimeout(0.5)
        try:
            data = s.recv(65536)
            if not data:
                closed = time.monotonic() - t0
                break
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = time.monotonic() - t0
            break
    assert closed is not None, "a dribbling request's headers never hit a deadline"
    assert closed <= HEADER + SLACK
    s.close()


def test_an_idle_websocket_is_closed(farm):
    """The peer never answers the farm's pings: the WebSocket's idle timeout ends it."""
    s = ws_handshake(farm.gymie_url)
    took = seconds_until_closed(s, IDLE + SLACK)
    assert took is not None, f"an idle WebSocket was still open after {IDLE + SLACK} s"
    s.close()


def test_a_websocket_that_answers_pings_stays_open(farm):
    """The ping-based timeout ends dead peers, not quiet ones: a client library answers the pings."""
    from websockets.sync.client import connect as ws_connect

    with ws_connect(farm.gymie_url, open_timeout=5) as ws:
        time.sleep(IDLE + 1)
        ws.send('{"method": "make", "params": {"env_id": "CartPole-v1"}}')
        reply = ws.recv(timeout=30)
        assert len(reply) == 32 and int(reply, 16) >= 0, reply  # make's reply: the bare instance id


def test_a_close_the_peer_never_echoes_drops_the_connection(farm):
    """The farm closes a WebSocket (an invalid message) and the peer never sends its close: the TCP
    connection is dropped once the close handshake's 5 s are over."""
    s = ws_handshake(farm.gymie_url)
    s.sendall(ws_text_frame("not json"))
    s.settimeout(5)
    first = s.recv(2)
    assert first[:1] == b"\x88", f"expected the farm's close frame, got {first!r}"
    took = seconds_until_closed(s, 5 + SLACK)
    assert took is not None, "the connection stayed open after an unanswered close"
    s.close()


def test_a_request_longer_than_the_idle_timeout_is_not_cut(start_farm):
    """The idle timeout ends idle connections, not busy ones: a Gymie step that runs past it (an env
    that hangs until --step-timeout kills its worker) still gets the dialect's answer."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    farm = start_farm(workers=1, args=["--http-idle-timeout", str(IDLE), "--step-timeout", str(IDLE + 3)])
    with ws_connect(farm.gymie_url, open_timeout=5) as ws:
        ws.send('{"method": "make", "params": {"env_id": "gymfarm_test/Faulty-v0"}}')
        iid = ws.recv(timeout=30)
        ws.send(f'{{"method": "reset", "params": {{"instance_id": "{iid}"}}}}')
        ws.recv(timeout=30)
        t0 = time.monotonic()
        ws.send(f'{{"method": "step", "params": {{"instance_id": "{iid}", "action": 3}}}}')
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        took = time.monotonic() - t0
    assert e.value.rcvd is not None, f"dropped after {took:.1f} s without the dialect's close"
    assert e.value.rcvd.code == 1007 and took >= IDLE + 2, (e.value.rcvd, took)
