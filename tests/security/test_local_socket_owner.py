"""Finding 5, the local socket: a client sends its hello (and with it the token) over the farm's
local unix socket only when the process listening there runs as the client's own uid
(SO_PEERCRED). Here the farm's `native-PID.sock` is replaced by a socket that a process running as
another user (nobody) serves and records; the Python client and the C++ one (`gymfarm status`,
which uses client/client.cpp) must fall back to ZeroMQ and send it nothing. Serving a socket as
another uid needs root; without it these tests skip."""
from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from farm_fixture import GYMFARM

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="serving a socket as another user needs root (setuid)")


def other_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


class RecordingSocket:
    """A unix stream socket served by a forked child running as `uid`, recording every byte any
    client sends it (it never answers). `move_to(path)` puts it in place of another socket."""

    def __init__(self, uid: int, lifetime: float = 60.0):
        self.spool = Path(tempfile.mkdtemp(prefix="gf-fake-"))
        os.chown(self.spool, uid, uid)
        self.path = self.spool / "s.sock"
        read_end, write_end = os.pipe()
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(read_end)
                os.close(ready_r)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                srv.bind(str(self.path))
                srv.listen(8)
                os.write(ready_w, b"1")
                conns = []
                deadline = time.monotonic() + lifetime
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([srv] + conns, [], [], 0.1)
                    for s in ready:
                        if s is srv:
                            conns.append(srv.accept()[0])
                            continue
                        data = s.recv(65536)
                        if data:
                            os.write(write_end, data)
                        else:
                            conns.remove(s)
                            s.close()
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        os.close(ready_w)
        self._recorded = read_end
        ok = select.select([ready_r], [], [], 10)[0] and os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not ok:
            self.close()
            raise RuntimeError("the recording socket did not start")
        os.set_blocking(self._recorded, False)
        self.received = b""

    def move_to(self, path: str) -> None:
        os.replace(self.path, path)  # a unix socket is found by its inode: it keeps serving there

    def drain(self) -> bytes:
        while True:
            try:
                data = os.read(self._recorded, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.received += data
        return self.received

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self.drain()
        os.close(self._recorded)
        shutil.rmtree(self.spool, ignore_errors=True)


@pytest.fixture
def locked_farm(start_farm):
    f = start_farm(workers=1, args=["--require-token"])
    with f.connect(token=f.token) as farm:
        assert farm.is_local  # the farm's own socket, served by our uid: used
        f.local_path = farm.server["local"]
    return f


@pytest.fixture
def planted(locked_farm):
    fake = RecordingSocket(other_uid())
    fake.move_to(locked_farm.local_path)
    yield fake
    fake.close()


def test_the_recording_socket_records_a_client_of_its_own_uid(locked_farm):
    fake = RecordingSocket(os.geteuid())  # served by us: the client trusts it and says hello
    try:
        fake.move_to(locked_farm.local_path)
        with locked_farm.connect(token=locked_farm.token, connect_timeout=1.0) as farm:
            assert not farm.is_local  # it never answered
        assert locked_farm.token.encode() in fake.drain()
    finally:
        fake.close()


def test_python_client_sends_no_token_to_another_users_socket(locked_farm, planted):
    with locked_farm.connect(token=locked_farm.token, connect_timeout=5.0) as farm:
        assert not farm.is_local
        env = farm.make("CartPole-v1")  # and it works over ZeroMQ
        env.reset(seed=0)
        env.step(0)
        env.close()
    time.sleep(0.2)
    assert planted.drain() == b""


def test_cpp_client_sends_no_token_to_another_users_socket(locked_farm, planted):
    env = {k: v for k, v in os.environ.items() if k != "GYMFARM_TOKEN"}
    r = subprocess.run([str(GYMFARM), "status", "--native-port", str(locked_farm.port), "--runtime-dir",
                        str(locked_farm.runtime_dir)], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 0 and "WORKER" in r.stdout, r.stderr  # it reads the token file and stays on ZeroMQ
    time.sleep(0.2)
    got = planted.drain()
    assert locked_farm.token.encode() not in got
    assert got == b""
