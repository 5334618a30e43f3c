"""What ``gymfarm.ray`` and ``gymfarm.nodes`` share without Ray: finding the ``gymfarm`` binary,
starting ``gymfarm start`` as a supervised child and reading its endpoint, and writing owner-only
files."""

from __future__ import annotations

import os
import secrets
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Runs between fork and exec of `gymfarm start`: the farm gets SIGKILL when its parent's process
# dies however it dies (the broker's own workers die with the broker), and exits at once if the
# parent is already gone.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def find_gymfarm() -> str:
    """The ``gymfarm`` binary: ``$GYMFARM_BIN_DIR/gymfarm``, else ``gymfarm`` on PATH. The same path
    must hold it on every node."""
    d = os.environ.get("GYMFARM_BIN_DIR")
    if d:
        return str(Path(d) / "gymfarm")
    found = shutil.which("gymfarm")
    if not found:
        raise FileNotFoundError("no gymfarm binary: put it on PATH or set GYMFARM_BIN_DIR (or pass gymfarm_bin=)")
    return found


def launch(cmd: list[str], env: dict[str, str] | None = None, stderr: Any = None) -> subprocess.Popen:
    """Starts ``cmd`` (``gymfarm start ...``) in its own session, with SIGKILL as its parent-death
    signal (``PR_SET_PDEATHSIG``, set from the thread that calls this), stdout a pipe (the ready
    banner: :func:`read_endpoint`) and ``stderr`` as given (None: this process's). The returned
    process's pid is the farm's own: the launcher execs it."""
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, str(os.getpid()), *cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        start_new_session=True,
    )


def read_endpoint(proc: subprocess.Popen, timeout: float) -> str:
    """The native endpoint a starting farm prints in its ready banner (``native: tcp://...``),
    once the banner's last line (``gymie: ...``) is out; RuntimeError if the farm exits or does not
    get ready within ``timeout`` seconds."""
    assert proc.stdout is not None
    out = proc.stdout
    deadline = time.monotonic() + timeout
    buf = b""
    endpoint = ""
    while time.monotonic() < deadline:
        if not select.select([out], [], [], 0.5)[0]:
            if proc.poll() is not None:
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
    raise RuntimeError("the farm exited before it was ready" if proc.poll() is not None else "the farm was not ready")


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``path`` mode 0600, atomically (a new file beside it, then renamed over it) and never
    through a symlink; an existing ``path`` is replaced only if it is a regular file of this user
    (else PermissionError)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()):
        raise PermissionError(f"{path} is not a regular file of this user; remove it")
    tmp = _write_new(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"), text)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def create_private(path: str | os.PathLike[str], text: str) -> bool:
    """Creates ``path`` (mode 0600, never through a symlink) holding ``text`` unless it exists:
    True when this call made it. Atomic: a reader, or another process creating it at the same time,
    sees either no file or the whole text of exactly one writer."""
    path = Path(path)
    tmp = _write_new(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"), text)
    try:
        os.link(tmp, path)  # fails if path exists, whatever it is (a symlink too)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _write_new(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path
