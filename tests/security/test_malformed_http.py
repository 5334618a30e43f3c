"""Finding: malformed HTTP (bare LF line endings, two Content-Lengths, Content-Length with
Transfer-Encoding) closed the connection with no response at all. Each must be answered 400,
with `Connection: close`, before the farm closes, on both HTTP ports."""
import socket
import time
from urllib.parse import urlparse

import pytest


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("malformed"), workers=1)
    yield f
    assert f.stop() == 0, f.log()


def exchange(url, raw, timeout=5.0):
    """Sends `raw`, half-closes nothing, and reads until the farm closes: everything it sent."""
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    s.sendall(raw)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        s.close()
    return out


CASES = {
    "bare LF": b"GET /v1/envs/ HTTP/1.1\nHost: 127.0.0.1\n\n",
    "bare LF after the request line": b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n",
    "two Content-Lengths": (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 2\r\nContent-Length: 20\r\n\r\n{}"),
    "Content-Length and Transfer-Encoding": (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    "Transfer-Encoding and Content-Length": (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n"
                                             b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("port", ["main", "gymnasium"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_gets_400_before_the_close(farm, case, port):
    url = farm.rest_url if port == "main" else farm.gymnasium_url
    out = exchange(url, CASES[case])
    assert out.startswith(b"HTTP/1.1 400"), f"{case}: {out[:200]!r}"
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in head
    assert b"\r\n\r\n" in out and b"malformed request" in out


def test_a_well_formed_request_still_passes(farm):
    u = urlparse(farm.rest_url)
    request = f"GET /v1/envs/ HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nConnection: close\r\n\r\n"
    out = exchange(farm.rest_url, request.encode())
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
