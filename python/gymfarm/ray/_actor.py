"""The Ray actor that runs one farm on its node: ``gymfarm start`` bound to the node's address,
with the cluster's token and CURVE secret key from owner-only files, supervised: the farm dies with the actor, and
the actor exits when the farm dies so that Ray restarts both."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import Any

from .._farmproc import launch, read_endpoint, write_private


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
        write_private(token_file, token)
        curve_args: list[str] = []
        if curve:  # the farm's CURVE secret key (0600) and the client keys it admits
            secret_file = os.path.join(self.runtime_dir, "cluster-curve.key")
            clients_file = os.path.join(self.runtime_dir, "cluster-curve-clients")
            write_private(secret_file, curve["secret_key"] + "\n")
            write_private(clients_file, "".join(k + "\n" for k in curve["clients"]))
            curve_args = ["--curve-secret-file", secret_file, "--curve-clients-file", clients_file]
        cmd = [gymfarm_bin, "start", "--host", host, "--workers", str(workers), "--native-port", "0",
               "--port", "0", "--gymnasium-http-port", "-1", "--runtime-dir", self.runtime_dir,
               "--token-file", token_file, *curve_args, *args]
        full_env = dict(os.environ)
        full_env.update(env)
        self.log_path = os.path.join(self.runtime_dir, "farm.log")
        with open(self.log_path, "wb") as log:
            self.proc = launch(cmd, full_env, stderr=log)
        self.pid = self.proc.pid  # the farm's broker (the launcher exec'd it)
        self.endpoint = ""
        try:
            self.endpoint = self._read_endpoint(start_timeout)
        except BaseException:
            self._kill()
            raise
        threading.Thread(target=self._watch, name="gymfarm-farm-watch", daemon=True).start()

    def _read_endpoint(self, timeout: float) -> str:
        try:
            return read_endpoint(self.proc, timeout)
        except RuntimeError:
            raise RuntimeError(f"the farm on {self.host} did not start: {self.log_tail()}") from None

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
