"""GET /dashboard/stream/<instance> (docs/operations.md "Dashboard"): an instance's frames as
multipart/x-mixed-replace, one PNG part per frame, under the same access rules as
/dashboard/frames/<instance>; at most one frame per 200 ms per stream, the same frame not sent
twice; the stream ends with the close delimiter when the instance is closed or its worker dies,
and the gateway lets it go when the viewer does; a bound on streams per client address and in
all (503 past it). Raw sockets, so a test can pick its source address in 127.0.0.0/8 and close
the connection when it likes."""
import os
import signal
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests
from test_dashboard import Stepper, base, make_shared, png_size

from farm_fixture import GYMFARM, wait_until

BOUNDARY = b"gymfarm-frame"


class Stream:
    """One GET of a stream over its own socket: the status and headers, then parts one by one."""

    def __init__(self, farm, path, headers=None, source="127.0.0.1"):
        u = urlsplit(base(farm))
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30, source_address=(source, 0))
        head = {"Host": f"127.0.0.1:{u.port}", **(headers or {})}
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
        self.sock.sendall(req.encode())
        self.buf = b""
        raw = self._until(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        self.body = b""
        if self.status != 200:
            self.body = self._exactly(int(self.headers.get("content-length", "0")))
        self.ended = False
        self.first = True

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the gateway closed the connection")
        self.buf += chunk

    def _until(self, marker):
        while marker not in self.buf:
            self._fill()
        at = self.buf.index(marker)
        out, self.buf = self.buf[:at], self.buf[at + len(marker):]
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def part(self):
        """The next part's PNG, or None at the close delimiter."""
        if self.first:
            assert self._exactly(2 + len(BOUNDARY)) == b"--" + BOUNDARY
            self.first = False
        tail = self._exactly(2)
        if tail == b"--":
            self.ended = True
            return None
        assert tail == b"\r\n", tail
        headers = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in headers)}
        assert fields["content-type"] == "image/png", fields
        png = self._exactly(int(fields["content-length"]))
        assert self._exactly(4 + len(BOUNDARY)) == b"\r\n--" + BOUNDARY
        return png

    def closed_by_peer(self, timeout):
        """Whether the gateway closes the connection within the timeout (after the end)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


def streams(farm, headers=None):
    return requests.get(base(farm) + "/dashboard/api/stats", headers=headers, timeout=30).json()["streams"]


def metric(farm, name, headers=None):
    text = requests.get(base(farm) + "/metrics", headers=headers, timeout=30).text
    return next(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " "))


def test_the_stream_sends_png_parts_at_most_five_a_second_and_ends_when_the_viewer_goes(start_farm):
    farm = start_farm(workers=1)
    with farm.connect() as c:
        watched = make_shared(c, render_mode="rgb_array")
        stepper = Stepper(c, [watched])
        try:
            assert wait_until(lambda: stepper.steps > 0, 30)  # reset and stepping: renderable
            s = Stream(farm, f"/dashboard/stream/{watched}")
            assert s.status == 200, s.body
            assert s.headers["content-type"] == "multipart/x-mixed-replace; boundary=gymfarm-frame"
            assert s.headers["cache-control"] == "no-store"
            assert "content-length" not in s.headers and s.headers["connection"] == "close"
            parts = [s.part()]  # the first came with the head
            t0 = time.monotonic()
            parts += [s.part() for _ in range(5)]
            took = time.monotonic() - t0
            assert all(png_size(p) == (600, 400) for p in parts)
            assert len(set(parts)) == len(parts)  # the env steps: every part a new frame, none twice
            assert took >= 4 * 0.2, took  # paced: one frame per 200 ms at most (the first's fetch began before t0)
            assert streams(farm) == 1
            assert metric(farm, "gymfarm_dashboard_streams") == 1
            s.close()  # the viewer goes away: the gateway's stream ends with it
            assert wait_until(lambda: streams(farm) == 0, 10), streams(farm)
        finally:
            stepper.stop()
        # an env that does not step: its frame is sent once, not again every 200 ms
        s = Stream(farm, f"/dashboard/stream/{watched}")
        assert s.status == 200
        assert png_size(s.part()) == (600, 400)
        s.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            for _ in range(2):  # the first may be the cache's frame from before the last steps
                s.part()
        s.close()
        assert wait_until(lambda: streams(farm) == 0, 10)
        # the single frame still works beside it
        r = requests.get(base(farm) + f"/dashboard/frames/{watched}", timeout=30)
        assert r.status_code == 200 and png_size(r.content) == (600, 400)


def test_the_stream_has_the_access_rules_of_the_frames(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    with farm.connect(token=farm.token) as c:
        watched = make_shared(c, render_mode="rgb_array")
        c.call("reset", watched, {"seed": 0})
        path = f"/dashboard/stream/{watched}"
        for headers, p in (({}, path), ({}, path + "?token=wrong"), ({"Authorization": "Bearer wrong"}, path),
                           ({"Cookie": "gymfarm_dashboard=" + b"wrong".hex()}, path)):
            s = Stream(farm, p, headers)
            assert s.status == 401, (headers, p, s.status)
            s.close()
        auth = {"Authorization": "Bearer " + farm.token}
        cookie = {"Cookie": "gymfarm_dashboard=" + farm.token.encode().hex()}
        evil = Stream(farm, path, {**cookie, "Origin": "http://evil.example"})
        assert evil.status == 403
        evil.close()
        for headers, p in ((auth, path), (cookie, path), ({}, path + "?token=" + farm.token)):
            s = Stream(farm, p, headers)
            assert s.status == 200, (headers, s.body)
            assert png_size(s.part()) == (600, 400)
            s.close()
        assert wait_until(lambda: streams(farm, auth) == 0, 10)


def test_the_stream_refuses_what_the_frames_refuse(start_farm):
    farm = start_farm(workers=3)
    with farm.connect() as c:
        private = c.call("make", body={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})["instance_id"]
        no_frames = make_shared(c)
        for i in (private, no_frames):
            c.call("reset", i, {"seed": 0})
        s = Stream(farm, f"/dashboard/stream/{private}")
        assert s.status == 404 and b"shared" in s.body, s.body
        s = Stream(farm, f"/dashboard/stream/{no_frames}")
        assert s.status == 409 and b"rgb_array" in s.body, s.body
        for bad in ("..%2Fetc", "a" * 65, ""):
            assert requests.get(base(farm) + "/dashboard/stream/" + bad, timeout=30).status_code == 404, bad
        assert requests.post(base(farm) + f"/dashboard/stream/{no_frames}", timeout=30).status_code == 405
        # a loopback farm without a token: loopback Host names only
        s = Stream(farm, f"/dashboard/stream/{no_frames}", {"Host": "evil.example"})
        assert s.status == 403
        assert streams(farm) == 0


def test_the_stream_ends_when_the_instance_is_closed_or_its_worker_dies(start_farm):
    farm = start_farm(workers=2)
    with farm.connect() as c:
        closed = make_shared(c, render_mode="rgb_array")
        killed = make_shared(c, render_mode="rgb_array")
        for i in (closed, killed):
            c.call("reset", i, {"seed": 0})
        a = Stream(farm, f"/dashboard/stream/{closed}")
        b = Stream(farm, f"/dashboard/stream/{killed}")
        assert png_size(a.part()) == (600, 400) and png_size(b.part()) == (600, 400)
        assert streams(farm) == 2
        c.call("close", closed)
        a.sock.settimeout(10)
        assert a.part() is None  # the close delimiter
        assert a.closed_by_peer(10)
        worker = next(w for w in c.call("stats")["workers"] if killed in (w.get("instances") or [w.get("instance")]))
        os.kill(worker["pid"], signal.SIGKILL)
        b.sock.settimeout(10)
        assert b.part() is None
        assert b.closed_by_peer(10)
        assert wait_until(lambda: streams(farm) == 0, 10)


def stream_path_of_a_watched_env(c):
    """A shared CartPole that renders, reset: the path of its stream."""
    watched = make_shared(c, render_mode="rgb_array")
    c.call("reset", watched, {"seed": 0})
    return f"/dashboard/stream/{watched}"


def assert_refused(farm, path, why: bytes, source="127.0.0.1"):
    refused = Stream(farm, path, source=source)
    assert refused.status == 503 and why in refused.body, refused.body
    refused.close()


def test_streams_are_bounded_per_client_address_and_in_all(start_farm):
    farm = start_farm(workers=1)
    with farm.connect() as c:
        path = stream_path_of_a_watched_env(c)
        open_ = []
        try:
            for _ in range(4):
                open_.append(Stream(farm, path))
                assert open_[-1].status == 200
            assert_refused(farm, path, b"per client address")
            for k in range(2, 9):  # 7 more addresses, 4 streams each: 32 in all
                for _ in range(4):
                    open_.append(Stream(farm, path, source=f"127.0.0.{k}"))
                    assert open_[-1].status == 200, (k, open_[-1].body)
            assert streams(farm) == 32
            assert_refused(farm, path, b"32 in all", source="127.0.0.9")
            for s in open_:  # every stream still gets its frames
                assert png_size(s.part()) == (600, 400)
        finally:
            for s in open_:
                s.close()
        assert wait_until(lambda: streams(farm) == 0, 10), streams(farm)
        s = Stream(farm, path)  # the places came back
        assert s.status == 200
        s.close()


def test_the_stream_bounds_are_flags(start_farm):
    farm = start_farm(workers=1, args=["--dashboard-streams", "3", "--dashboard-streams-per-client", "2"])
    with farm.connect() as c:
        path = stream_path_of_a_watched_env(c)
        open_ = []
        try:
            open_ += [Stream(farm, path), Stream(farm, path)]
            assert_refused(farm, path, b"2 per client address")
            open_.append(Stream(farm, path, source="127.0.0.2"))
            assert [s.status for s in open_] == [200, 200, 200]
            assert_refused(farm, path, b"3 in all", source="127.0.0.3")
        finally:
            for s in open_:
                s.close()
    for bad in ("0", "4097", "x"):
        r = subprocess.run([str(GYMFARM), "start", "--dashboard-streams", bad], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "--dashboard-streams" in r.stderr, (bad, r.stderr)
