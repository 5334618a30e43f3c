"""Starts and stops real farms for the Python tests: `gymfarm start` on 127.0.0.1, a free port,
the project's test envs imported, a private runtime directory; stopped by process id."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import gymfarm

ROOT = Path(__file__).resolve().parents[2]
# GYMFARM_BIN_DIR points the tests at another build (scripts/sanitize uses build-asan/bin).
GYMFARM = Path(os.environ.get("GYMFARM_BIN_DIR", ROOT / "build" / "bin")) / "gymfarm"
SUPPORT = ROOT / "tests" / "support"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone only once reaped; report it as alive so tests catch it
        return Path(f"/proc/{pid}/stat").exists()
    except OSError:
        return False


def proc_comm(pid: int) -> str:
    """The process's name as the kernel shows it ("gf-zygote", "gf-worker", ...); "" when gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def terminate(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM to a process we started, by pid; SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class FarmProcess:
    """A `gymfarm start` running in the foreground as a child of the test."""

    def __init__(self, tmp: Path, workers: int = 2, args: list[str] | None = None, timeout: float = 90.0,
                 env_vars: dict | None = None):
        tmp.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to ~107 bytes, so the runtime dir lives under a short path
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="gf-"))
        env = dict(os.environ)
        env.update(env_vars or {})
        env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        cmd = [str(GYMFARM), "start", "--workers", str(workers), "--native-port", "0", "--port", "0",
               "--gymnasium-http-port", "0", "--runtime-dir", str(self.runtime_dir), "--import", "gymfarm_testenvs",
               *(args or [])]
        self.log_path = tmp / "farm.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.endpoint = ""
        self.gymie_url = ""
        self.rest_url = ""
        self.token = ""
        self.gymnasium_url = ""
        self.gym_server_url = ""
        self.gym_server_files_url = ""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "native:" in line:
                self.endpoint = line.split()[-1]
            if "token:" in line:
                self.token = line.split()[1]
            if "rest:" in line:
                self.rest_url = line.split()[1]
            if "gymnasium:" in line:
                self.gymnasium_url = line.split()[1]
            if "gym-server:" in line:
                self.gym_server_url = line.split()[1]
            if "gym-server-files:" in line:
                self.gym_server_files_url = line.split()[1]
            if "gymie:" in line:
                self.gymie_url = line.split()[-1]
                break
        if not self.endpoint:
            self.stop()
            raise RuntimeError(f"the farm did not start; log:\n{self.log_path.read_text()}")
        self.port = int(self.endpoint.rsplit(":", 1)[1])

    def connect(self, **kw) -> gymfarm.Farm:
        return gymfarm.connect(self.endpoint, **kw)

    def worker_pids(self) -> list[int]:
        """The farm's child processes: its workers and (unless --no-zygote) the zygote."""
        return children_of(self.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM by pid, wait, and return the exit code (SIGKILL if it does not stop)."""
        terminate(self.proc, timeout)
        self._log.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return self.proc.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()


def wait_until(pred, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def step_in_background(env, action):
    """Starts ``env.step(action)`` on a thread: (the thread, its outcome dict), which gets ``error``
    (what the step raised) and ``elapsed`` (seconds) when the step returns."""
    import threading

    outcome = {}

    def run():
        t0 = time.monotonic()
        try:
            env.step(action)
        except Exception as e:  # recorded for the test to assert on
            outcome["error"] = e
        outcome["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome
