"""The peers' own test suites and clients, unchanged, against a farm started with default settings.

Each peer's code is fetched at a pinned commit by tests/peers/fetch_peers.sh into build/peers (or
PEERS_DIR); a peer whose code is not there is skipped with the command that fetches it. The farm is
`gymfarm start` with no flags but the ports the suites hard-code (5000 for gym-http-api and Gymie,
40004 for gymnasium-http-api; the native port is left to the OS) and a private runtime directory.
Run: tests/peers/fetch_peers.sh && .venv/bin/python -m pytest tests/peers -q
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from farm_fixture import children_of, pid_alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
GYMFARM = Path(os.environ.get("GYMFARM_BIN_DIR", ROOT / "build" / "bin")) / "gymfarm"
PEERS_DIR = Path(os.environ.get("PEERS_DIR", ROOT / "build" / "peers"))
SHIM = Path(__file__).resolve().parent / "shim"
PYTHON = sys.executable

# the commits fetch_peers.sh checks out
PINS = {
    "gym-http-api": "15b68c3921fb8cd29366b50771cd5b0121c55872",
    "gymnasium-http-api": "3602bbaae3ea11b2dd5b61879a16a672e8faa500",
    "Gymie-Client": "26be04c44a59657f4f8a2df8e64c0ace8ccb70b4",
}
GATEWAY_PORT = 5000  # gym-http-api's tests/test_api.py and Gymie-Client's tests hard-code it
GYMNASIUM_PORT = 40004  # gymnasium-http-api's tests/test_api.py hard-codes it
SUITE_TIMEOUT = 240


def peer(name: str) -> Path:
    d = PEERS_DIR / name
    if not (d / ".git").exists():
        pytest.skip(f"{name} is not fetched: run tests/peers/fetch_peers.sh (needs git and github.com)")
    head = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head != PINS[name]:
        pytest.skip(f"{name} is at {head or '?'}, not the pinned {PINS[name]}: rerun tests/peers/fetch_peers.sh")
    return d


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run(cmd, cwd: Path, env: dict | None = None, timeout: float = SUITE_TIMEOUT) -> subprocess.CompletedProcess:
    """Runs a peer's command in its own process group; on timeout the whole group is killed."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"{cmd} ran past {timeout} s:\n{out[-6000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, "")


class DefaultFarm:
    """`gymfarm start` with default settings except the ports the peers' suites hard-code."""

    def __init__(self, tmp: Path):
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="gf-peers-"))
        self.log_path = tmp / "farm.log"
        self._log = open(self.log_path, "w")
        cmd = [str(GYMFARM), "start", "--port", str(GATEWAY_PORT), "--gymnasium-http-port", str(GYMNASIUM_PORT),
               "--native-port", "0", "--runtime-dir", str(self.runtime_dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     start_new_session=True)
        ready = False
        deadline = time.monotonic() + 90
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "gymie:" in line:
                ready = True
                break
        if not ready:
            self.stop()
            raise RuntimeError(f"the farm did not start; log:\n{self.log_path.read_text()}")
        # keep draining stdout so the farm never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return self.proc.returncode


@pytest.fixture(scope="module")
def default_farm(tmp_path_factory):
    if not GYMFARM.exists():
        pytest.skip(f"{GYMFARM} is not built")
    for port in (GATEWAY_PORT, GYMNASIUM_PORT):
        if not port_free(port):
            pytest.skip(f"port {port} is taken, and the peers' suites hard-code it")
    farm = DefaultFarm(tmp_path_factory.mktemp("peers"))
    yield farm
    workers = children_of(farm.proc.pid)
    assert farm.stop() == 0, farm.log_path.read_text()
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10), "worker processes left behind"


def peer_pytest(checkout: Path, extra_path: list[Path], env_extra: dict | None = None):
    """The peer's tests/test_api.py with pytest, in this venv, with the peer's checkout as rootdir
    and none of the project's pytest configuration. `-P` keeps the checkout's own
    gym_http_server.py (a Flask server) from shadowing the launch shim."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in extra_path + [checkout])
    env.update(env_extra or {})
    cmd = [PYTHON, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(checkout),
           "-q", "-rA", "tests/test_api.py"]
    return run(cmd, cwd=checkout, env=env)


def test_gymie_client_server_down_suite():
    """Runs first, before the module's farm starts. `npm test`'s first half: the client's unit tests
    and "connect fails when no server runs"."""
    d = peer("Gymie-Client")
    if not port_free(GATEWAY_PORT):
        pytest.skip(f"port {GATEWAY_PORT} is taken; this half needs it free")
    r = npm_run(d, "test-server-down")
    assert r.returncode == 0 and not tape_failures(r.stdout), r.stdout[-8000:]


def test_gym_http_api_suite(default_farm):
    d = peer("gym-http-api")
    # a dummy key makes the two upload tests run too (the farm's upload validates and no-ops)
    r = peer_pytest(d, [SHIM], {"OPENAI_GYM_API_KEY": "dummy-key"})
    assert r.returncode == 0, r.stdout[-8000:]
    assert "16 passed" in r.stdout, r.stdout[-8000:]


def test_gym_http_api_clients(default_farm, tmp_path):
    d = peer("gym-http-api")
    env = dict(os.environ, OPENAI_GYM_API_KEY="dummy-key")
    # gym_http_client.py's __main__ and example_agent.py (100 CartPole episodes, with a monitor
    # and an upload), run from a scratch directory as a user would
    for script in ("gym_http_client.py", "example_agent.py"):
        r = run([PYTHON, str(d / script)], cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0, f"{script}:\n{r.stdout[-6000:]}"


def test_gymnasium_http_api_suite(default_farm):
    d = peer("gymnasium-http-api")
    if importlib.util.find_spec("mujoco") is None:
        pytest.fail("the suite's test_step makes Ant-v4, which needs mujoco (scripts/requirements.txt)")
    r = peer_pytest(d, [])
    assert r.returncode == 0, r.stdout[-8000:]
    assert "18 passed" in r.stdout, r.stdout[-8000:]


def test_gymnasium_http_api_clients(default_farm, tmp_path):
    d = peer("gymnasium-http-api")
    # gym_http_client.py's __main__ (CartPole with make kwargs, rgb_array render) and
    # frozen_lake_agent.py (ansi render, transitions, a 2000-step episode)
    for script in ("gym_http_client.py", "frozen_lake_agent.py"):
        r = run([PYTHON, str(d / script)], cwd=tmp_path, timeout=120)
        assert r.returncode == 0, f"{script}:\n{r.stdout[-6000:]}"


def npm_run(d: Path, script: str):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    if not (d / "node_modules" / ".bin" / "ts-node").exists():
        pytest.skip("Gymie-Client's node_modules are missing: run tests/peers/fetch_peers.sh")
    # --ignore-scripts skips the package's pre/post hooks, which would pip-install and start the
    # original Python server (`python -m gymie &`) and kill whatever listens on port 5000
    return run(["npm", "run", script, "--ignore-scripts"], cwd=d, timeout=SUITE_TIMEOUT)


def tape_failures(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("not ok")]


def test_gymie_client_server_up_suite(default_farm):
    """`npm test`'s second half (Gymie#connect/close/make and every Env test) against the farm,
    at the suite's own URL http://0.0.0.0:5000/gym."""
    d = peer("Gymie-Client")
    r = npm_run(d, "test-server-up")
    failures = tape_failures(r.stdout)
    assert r.returncode == 0 and not failures, r.stdout[-8000:]
    assert "# pass  24" in r.stdout, r.stdout[-8000:]


def test_twenty_gymie_clients_four_envs_each(default_farm):
    """20 concurrent Gymie clients (one WebSocket each, Gymie-Client's one-request-at-a-time
    pattern) each make 4 CartPole envs, reset and step each, and close them; all succeed."""
    import json

    from websockets.sync.client import connect

    clients, envs_each = 20, 4
    errors: list[str] = []
    made: list[int] = []
    start = threading.Barrier(clients)

    def client(k: int) -> None:
        try:
            with connect(f"ws://127.0.0.1:{GATEWAY_PORT}/gym", open_timeout=30, close_timeout=10) as ws:
                def call(method, **params):
                    ws.send(json.dumps({"method": method, "params": params}))
                    return ws.recv(timeout=90)

                start.wait(60)
                ids = []
                for _ in range(envs_each):
                    iid = call("make", env_id="CartPole-v1")
                    assert len(iid) == 32 and all(c in "0123456789abcdef" for c in iid), iid
                    ids.append(iid)
                for iid in ids:
                    obs = json.loads(call("reset", instance_id=iid))
                    assert len(obs) == 4 and all(isinstance(x, float) for x in obs), obs
                    step = json.loads(call("step", instance_id=iid, action=k % 2))
                    assert len(step) == 4 and isinstance(step[1], float) and isinstance(step[2], bool), step
                for iid in ids:
                    assert call("close", instance_id=iid) == "true"
                made.append(len(ids))
        except Exception as e:  # collected and reported below, with the client's number
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "clients still running after 180 s"
    assert not errors, "\n".join(errors)
    assert sum(made) == clients * envs_each, made
    print(f"{clients} Gymie clients x {envs_each} envs: {elapsed:.1f} s")
