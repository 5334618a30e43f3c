"""Finding: the native protocol crossed the network in clear (a hello's token readable by anyone on
the path) and admitted any peer that could reach the port. With --curve-secret-file and
--curve-clients-file the native port is a ZeroMQ CURVE server: only a client that knows the farm's
public key and holds an allowed keypair gets in, and what travels is encrypted."""
from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq

import gymfarm
from farm_fixture import GYMFARM
from gymfarm import errors

TOKEN = "curve-test-token-0123456789abcdef"
REFUSE_WITHIN = 8.0  # seconds a refused client may take to give up (connect_timeout 2 s + slack)


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


class Keys:
    """A server keypair, an allowed client keypair and the files a farm starts with."""

    def __init__(self, d: Path):
        d.mkdir(parents=True, exist_ok=True)
        self.server_public, self.server_secret = (k.decode() for k in zmq.curve_keypair())
        self.client_public, self.client_secret = (k.decode() for k in zmq.curve_keypair())
        self.secret_file = _write(d / "server.key", self.server_secret + "\n")
        self.clients_file = _write(d / "clients", "# allowed clients\n" + self.client_public + "\n", 0o644)
        self.token_file = _write(d / "token", TOKEN + "\n")

    def args(self) -> list[str]:
        return ["--curve-secret-file", str(self.secret_file), "--curve-clients-file", str(self.clients_file),
                "--require-token", "--token-file", str(self.token_file)]

    def client(self) -> dict[str, str]:
        return {"server_key": self.server_public, "public_key": self.client_public, "secret_key": self.client_secret}


@pytest.fixture
def curve_farm(start_farm, tmp_path):
    keys = Keys(tmp_path / "keys")
    farm = start_farm(workers=1, args=keys.args())
    return farm, keys


def _refused(endpoint: str, **kw) -> None:
    t0 = time.monotonic()
    with pytest.raises(errors.FarmUnavailable):
        gymfarm.Farm(endpoint, token=TOKEN, connect_timeout=2.0, local=False, **kw)
    assert time.monotonic() - t0 < REFUSE_WITHIN


def test_right_keys_work(curve_farm):
    farm, keys = curve_farm
    with gymfarm.Farm(farm.endpoint, token=TOKEN, local=False, curve_server_key=keys.server_public,
                      curve_public_key=keys.client_public, curve_secret_key=keys.client_secret) as f:
        env = f.make("CartPole-v1")
        env.reset(seed=0)
        env.step(0)
        env.close()
    # the one-dict form, and the local socket on this host after the CURVE hello
    with gymfarm.Farm(farm.endpoint, token=TOKEN, curve=keys.client()) as f:
        assert f.ping()
        venv = f.make_vec("CartPole-v1", num_envs=2)
        venv.reset(seed=0)
        venv.close()


def test_clients_without_the_keys_are_refused(curve_farm, tmp_path):
    farm, keys = curve_farm
    _refused(farm.endpoint)  # NULL mechanism
    other_public, other_secret = (k.decode() for k in zmq.curve_keypair())
    # a wrong server key: the handshake never completes
    _refused(farm.endpoint, curve_server_key=other_public, curve_public_key=keys.client_public,
             curve_secret_key=keys.client_secret)
    # a client keypair the farm does not list
    _refused(farm.endpoint, curve_server_key=keys.server_public, curve_public_key=other_public,
             curve_secret_key=other_secret)
    # and the farm keeps serving the allowed one
    with gymfarm.Farm(farm.endpoint, token=TOKEN, local=False, curve=keys.client()) as f:
        assert f.ping()


def test_null_greeting_is_refused(curve_farm):
    """A raw ZMTP 3.0 peer offering the NULL mechanism: the farm's greeting says CURVE and the
    connection is closed without a byte of the protocol."""
    farm, _ = curve_farm
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    ready = b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"
    with socket.create_connection(("127.0.0.1", farm.port), timeout=5) as s:
        s.sendall(greeting[:11])  # signature and major version: the farm answers with its greeting
        got = b""
        while len(got) < 64:  # the farm's greeting: signature, version, mechanism, as-server, filler
            chunk = s.recv(64 - len(got))
            if not chunk:
                break
            got += chunk
        assert got[12:32].rstrip(b"\x00") == b"CURVE", got
        closed = False
        try:
            s.sendall(greeting[11:] + ready)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                assert b"READY" not in chunk
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            closed = True
        assert closed, "the farm kept a NULL-mechanism connection open"


class Proxy:
    """A TCP relay between a client and the farm that keeps every byte the client sends."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            r, _, _ = select.select([self.listener, *pairs], [], [], 0.05)
            for s in r:
                if s is self.listener:
                    c, _ = s.accept()
                    u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                    pairs[c], pairs[u] = u, c
                    self._clients = getattr(self, "_clients", set()) | {c}
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                peer = pairs.get(s)
                if not data or peer is None:
                    for x in (s, peer):
                        if x is not None:
                            pairs.pop(x, None)
                            x.close()
                    continue
                if s in getattr(self, "_clients", set()):
                    self.seen += data
                peer.sendall(data)
        for s in pairs:
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def _through_proxy(farm, **kw) -> bytes:
    proxy = Proxy(farm.port)
    try:
        with gymfarm.Farm(f"tcp://127.0.0.1:{proxy.port}", token=TOKEN, local=False, **kw) as f:
            env = f.make("CartPole-v1")
            env.reset(seed=0)
            env.close()
    finally:
        proxy.close()
    return bytes(proxy.seen)


def test_token_never_on_the_wire(curve_farm):
    farm, keys = curve_farm
    seen = _through_proxy(farm, curve=keys.client())
    assert len(seen) > 200  # the proxy carried the session
    assert TOKEN.encode() not in seen
    assert b"CartPole" not in seen


def test_proxy_sees_the_token_without_curve(start_farm, tmp_path):
    """The control: the same relay on a farm without CURVE reads the token in clear."""
    token_file = _write(tmp_path / "token", TOKEN + "\n")
    farm = start_farm(workers=1, args=["--require-token", "--token-file", str(token_file)])
    assert TOKEN.encode() in _through_proxy(farm)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_farm_refuses_a_readable_secret_file(tmp_path, mode):
    keys = Keys(tmp_path / "keys")
    os.chmod(keys.secret_file, mode)
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    cmd = [str(GYMFARM), "start", "--workers", "1", "--native-port", "0", "--port", "-1",
           "--runtime-dir", str(runtime), *keys.args()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "curve-secret-file" in p.stderr and "others may read it" in p.stderr


def test_farm_refuses_bad_key_files(tmp_path):
    keys = Keys(tmp_path / "keys")
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    base = [str(GYMFARM), "start", "--workers", "1", "--native-port", "0", "--port", "-1",
            "--runtime-dir", str(runtime)]
    _write(keys.clients_file, "not-a-key\n", 0o644)
    p = subprocess.run(base + keys.args(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a z85 public key" in p.stderr, p.stderr
    p = subprocess.run(base + ["--curve-secret-file", str(keys.secret_file)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "go together" in p.stderr, p.stderr


def test_cli_status_uses_the_farms_own_keypair(curve_farm):
    """`gymfarm status` (the C++ client) reaches a CURVE farm only with --curve-secret-file."""
    farm, keys = curve_farm
    base = [str(GYMFARM), "status", "--native-port", str(farm.port), "--runtime-dir", str(farm.runtime_dir)]
    env = dict(os.environ, GYMFARM_TOKEN=TOKEN)
    t0 = time.monotonic()
    p = subprocess.run(base, capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 1 and "no farm answers" in p.stderr, (p.stdout, p.stderr)
    assert time.monotonic() - t0 < 15
    p = subprocess.run(base + ["--curve-secret-file", str(keys.secret_file)], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0 and f"farm pid {farm.pid}" in p.stdout, (p.stdout, p.stderr)
