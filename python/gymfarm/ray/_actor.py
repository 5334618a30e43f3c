"""The Ray actor that runs one farm on its node: ``gymfarm start`` bound to the node's address,
with the cluster's token and CURVE secret key from owner-only files, supervised: the farm dies with the actor, and
the actor exits when the farm dies so that Ray restarts both."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

# Runs between fork and exec of `gymfarm start`: the farm gets SIGKILL when the actor's process
# dies however it dies (the broker's own workers die with the broker), and exits at once if the
# actor is already gone.
_LAUNCH = ("import ctypes, os, signal, sys\n"
           "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
           "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
           "os.execv(sys.argv[2], sys.argv[2:])\n")


def _write_private(path: str, text: str) -> None:
    """A new file, mode 0600, never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class FarmActor:
    """One farm (``gymfarm start``) on this node. Made by FarmCluster with hard node affinity and
    ``max_restarts=-1``: Ray restarts it, and so the farm, when either dies."""

    def __init__(self, host: str, workers: int, token: str, gymfarm_bin: str, args: list[str],
                 env: dict[str, str], start_timeout: float = 120.0, curve: dict[str, Any] | None = None):
        self.host = host
        self._stopping = False
        # a private 0700 directory for the farm's runtime files and the token (0600)
        self.runtime_dir = tempfile.mkdtemp(prefix="gf-ray-")
        token_file = os.path.join(self.runtime_dir, "cluster-token")
        _write_private(token_file, token)
        curve_args: list[str] = []
        if curve:  # the farm's CURVE secret key (0600) and the client keys it admits
            secret_file = os.path.join(self.runtime_dir, "cluster-curve.key")
            clients_file = os.path.join(self.runtime_dir, "cluster-curve-clients")
            _write_private(secret_file, curve["secret_key"] + "\n")
            _write_private(clients_file, "".join(k + "\n" for k in curve["clients"]))
            curve_args = ["--curve-secret-file", secret_file, "--curve-clients-file", clients_file]
        cmd = [gymfarm_bin, "start", "--host", host, "--workers", str(workers), "--native-port", "0",
               "--port", "0", "--gymnasium-http-port", "-1", "--runtime-dir", self.runtime_dir,
               "--token-file", token_file, *curve_args, *args]
        full_env = dict(os.environ)
        full_env.update(env)
        self.log_path = os.path.join(self.runtime_dir, "farm.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(os.getpid()), *cmd],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                     env=full_env, start_new_session=True)
        log.close()
        self.pid = self.proc.pid  # the farm's broker (the launcher exec'd it)
        self.endpoint = ""
        try:
            self.endpoint = self._read_endpoint(start_timeout)
        except BaseException:
            self._kill()
            raise
        threading.Thread(target=self._watch, name="gymfarm-farm-watch", daemon=True).start()

    def _read_endpoint(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        out = self.proc.stdout
        deadline = time.monotonic() + timeout
        buf = b""
        endpoint = ""
        while time.monotonic() < deadline:
            if not select.select([out], [], [], 0.5)[0]:
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(out.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if "native:" in line:
                    endpoint = line.split()[-1]
                if "gymie:" in line and endpoint:
                    return endpoint
        raise RuntimeError(f"the farm on {self.host} did not start: {self.log_tail()}")

    def _watch(self) -> None:
        """The farm exited: unless we stopped it, end this actor so that Ray restarts it."""
        assert self.proc.stdout is not None
        while self.proc.stdout.read(65536):
            pass  # keep its stdout drained
        self.proc.wait()
        if not self._stopping:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            os._exit(1)

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"endpoint": self.endpoint, "pid": self.pid, "host": self.host, "node_id": ctx.get_node_id(),
                "actor_pid": os.getpid(), "restarted": bool(ctx.was_current_actor_reconstructed)}

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """Stops the farm (SIGTERM, then SIGKILL past ``timeout``) and removes its files."""
        self._stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return self.pid

    def _kill(self) -> None:
        self._stopping = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
