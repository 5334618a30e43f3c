"""``gymfarm nodes init|run|file|status``: one farm per node under any scheduler (Slurm,
Kubernetes, by hand), without Ray. The C++ CLI hands ``gymfarm nodes ...`` to
``python -m gymfarm.nodes ...``.

    gymfarm nodes init DIR [--rotate]
    gymfarm nodes run DIR --host ADDR [--port P] [--workers N] [--name NAME] [-- GYMFARM START ARGS]
    gymfarm nodes file DIR OUT [--wait N] [--timeout S]
    gymfarm nodes status DIR

DIR is a directory that every node and the client see (a shared filesystem), owned by the user
that runs the farms and the client, mode 0700. ``init`` makes in it a random token (``token``), the
farms' CURVE secret key (``server.key``), the client's CURVE secret key (``client.key``) and the
client public keys the farms admit (``clients``, one z85 key a line, as ``gymfarm start
--curve-clients-file`` reads it), every file 0600, and ``farms/`` (0700). ``run`` runs ``gymfarm
start`` on one node, bound to ADDR with those files, in the foreground, and registers the farm as
``farms/NAME.json`` while it runs. ``file`` writes a cluster file for ``gymfarm.connect(OUT)``,
which follows ``farms/`` as farms come and go. ``status`` lists the registered farms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._farmproc import create_private, find_gymfarm, launch, read_endpoint, write_private
from .client import read_private
from .sharded import _reachable, farm_registrations, farms_dir_endpoints

PROG = "gymfarm nodes"


def _say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _refuse(msg: str) -> SystemExit:
    return SystemExit(f"{PROG}: {msg}")


def _check_dir(path: Path) -> None:
    """``path`` must be a directory (not a symlink) of this user that nobody else may access."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _refuse(f"{path} does not exist (gymfarm nodes init)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise _refuse(f"{path} belongs to another user")
    if st.st_mode & 0o077:
        raise _refuse(f"{path} may be accessed by group or others (mode {stat.S_IMODE(st.st_mode):o}; chmod 700)")


def _private(path: Path, what: str) -> str:
    """The text of an owner-only file of ours; refused (with the reason) otherwise."""
    try:
        return read_private(path, what)
    except FileNotFoundError:
        raise _refuse(f"{what} {path} is missing (gymfarm nodes init)") from None
    except OSError as e:  # a symlink (ELOOP), another user's, readable by others
        raise _refuse(str(e) if isinstance(e, PermissionError) else f"{what} {path}: {e.strerror}") from None


class Layout:
    """The files of a nodes directory."""

    def __init__(self, d: str | os.PathLike[str]):
        self.dir = Path(d).absolute()
        self.token = self.dir / "token"
        self.server_key = self.dir / "server.key"
        self.client_key = self.dir / "client.key"
        self.clients = self.dir / "clients"
        self.farms = self.dir / "farms"

    def check(self) -> None:
        _check_dir(self.dir)
        _check_dir(self.farms)

    def curve(self) -> dict[str, str]:
        """The client's CURVE keys (the cluster file's ``curve`` entry): the farms' public key, the
        client's public key and where its secret key is."""
        import zmq

        server = _private(self.server_key, "the CURVE server key")
        client = _private(self.client_key, "the CURVE client key")
        return {
            "server_key": zmq.curve_public(server.encode()).decode(),
            "public_key": zmq.curve_public(client.encode()).decode(),
            "secret_key_file": str(self.client_key),
        }


# -- init -------------------------------------------------------------------------------------------


def cmd_init(a: argparse.Namespace) -> int:
    import zmq

    lay = Layout(a.dir)
    for d in (lay.dir, lay.farms):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise _refuse(f"{d.parent} does not exist") from None
        _check_dir(d)

    made: list[str] = []

    def put(path: Path, text: str, what: str) -> None:
        """Writes ``path`` (rotate) or creates it if missing; an existing one must be ours, 0600."""
        if a.rotate:
            try:
                write_private(path, text)
            except PermissionError as e:
                raise _refuse(str(e)) from None
            made.append(path.name)
        elif create_private(path, text):
            made.append(path.name)
        else:
            _private(path, what)

    put(lay.token, secrets.token_hex(32) + "\n", "the token file")
    put(lay.server_key, zmq.curve_keypair()[1].decode() + "\n", "the CURVE server key")
    put(lay.client_key, zmq.curve_keypair()[1].decode() + "\n", "the CURVE client key")
    # the farms admit the client key's public half (and any other line someone added)
    public = zmq.curve_public(_private(lay.client_key, "the CURVE client key").encode()).decode()
    if a.rotate:
        put(lay.clients, public + "\n", "the CURVE clients file")
    elif not create_private(lay.clients, public + "\n"):
        text = _private(lay.clients, "the CURVE clients file")
        if public not in (line.strip() for line in text.splitlines()):
            write_private(lay.clients, (text + "\n" if text else "") + public + "\n")
            made.append(lay.clients.name)
    else:
        made.append(lay.clients.name)
    if made:
        _say(f"{lay.dir}: made {', '.join(made)}" + (" (restart the farms to use them)" if a.rotate else ""))
    else:
        _say(f"{lay.dir}: already initialized; kept the token and keys (--rotate replaces them)")
    return 0


# -- run --------------------------------------------------------------------------------------------


def _name(name: str | None, host: str, endpoint: str) -> str:
    """The registration's file name: ``--name`` or HOSTNAME-ADDR-PORT, as letters, digits and ``._-``,
    not starting with a dot."""
    name = name or f"{socket.gethostname()}-{host}-{endpoint.rsplit(':', 1)[-1]}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:200] or "farm"


def _drain(out: Any) -> None:
    """Reads the farm's stdout (its banner, which names the token) to its end, so that the farm never
    blocks on it; none of it is shown."""
    while out.read(65536):
        pass


def _remove_registration(path: Path, pid: int) -> None:
    """Removes the farm's registration if it is still this farm's (same pid)."""
    regs = farm_registrations(path.parent) or []
    if any(r["name"] == path.stem and r.get("pid") == pid for r in regs):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def cmd_run(a: argparse.Namespace) -> int:
    lay = Layout(a.dir)
    lay.check()
    for path, what in (
        (lay.token, "the token file"),
        (lay.server_key, "the CURVE server key"),
        (lay.clients, "the CURVE clients file"),
    ):
        _private(path, what)
    if a.host in ("0.0.0.0", "::", "*", ""):
        raise _refuse(f"--host {a.host!r}: give the node's own address, the one clients connect to")
    try:
        gymfarm = a.gymfarm_bin or find_gymfarm()
    except FileNotFoundError as e:
        raise _refuse(str(e)) from None
    if not os.access(gymfarm, os.X_OK):
        raise _refuse(f"{gymfarm}: no gymfarm binary there (GYMFARM_BIN_DIR, PATH or --gymfarm-bin)")
    # the farm's own runtime files (pid file, log, worker sockets) stay on this node
    runtime_dir = tempfile.mkdtemp(prefix="gf-nodes-")
    cmd = [
        gymfarm,
        "start",
        "--host",
        a.host,
        "--native-port",
        str(a.port),
        "--port",
        "-1",
        "--gymnasium-http-port",
        "-1",
        "--runtime-dir",
        runtime_dir,
        "--require-token",
        "--token-file",
        str(lay.token),
        "--curve-secret-file",
        str(lay.server_key),
        "--curve-clients-file",
        str(lay.clients),
    ]
    if a.workers is not None:
        cmd += ["--workers", str(a.workers)]
    cmd += a.extra

    stop: dict[str, Any] = {"signal": None, "at": None}
    procs: list[subprocess.Popen] = []

    def forward(signum: int, _frame: Any) -> None:
        if stop["at"] is None:
            stop["signal"], stop["at"] = signum, time.monotonic()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    registration: Path | None = None
    proc: subprocess.Popen | None = None
    try:
        _say(f"starting a farm on {a.host}:{a.port}")
        proc = launch(cmd, dict(os.environ))
        procs.append(proc)
        if stop["signal"] is not None:  # a signal before the farm was in `procs`
            proc.send_signal(stop["signal"])
        try:
            endpoint = read_endpoint(proc, a.start_timeout)
        except RuntimeError as e:
            endpoint = ""
            if stop["at"] is None:
                _say(f"{e}; stopping it")
                forward(signal.SIGTERM, None)
        assert proc.stdout is not None
        out = proc.stdout
        threading.Thread(target=_drain, args=(out,), name="gymfarm-nodes-drain", daemon=True).start()
        if endpoint and stop["at"] is None:
            registration = lay.farms / f"{_name(a.name, a.host, endpoint)}.json"
            doc = {
                "endpoint": endpoint,
                "host": a.host,
                "node": socket.gethostname(),
                "pid": proc.pid,
                "started": time.time(),
            }
            write_private(registration, json.dumps(doc) + "\n")
            _say(f"farm ready: {endpoint} (pid {proc.pid}); registered {registration}")
        while True:
            try:
                rc = proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop["at"] is not None:
                if registration is not None:  # no new makes here while it drains
                    _remove_registration(registration, proc.pid)
                    registration = None
                if time.monotonic() - stop["at"] > a.stop_timeout:
                    _say(f"the farm (pid {proc.pid}) did not stop within {a.stop_timeout:g} s: SIGKILL")
                    proc.kill()
                    stop["at"] = float("inf")
    finally:
        if proc is not None and proc.poll() is None:  # an error of ours: the farm goes too
            proc.kill()
            proc.wait(10)
        if registration is not None and proc is not None:
            _remove_registration(registration, proc.pid)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
    status = rc if rc >= 0 else 128 - rc
    if not endpoint and stop["signal"] is None:
        status = status or 1  # it never got ready
    _say(f"the farm (pid {proc.pid}) exited with status {status}")
    return status


# -- file, status -----------------------------------------------------------------------------------


def cmd_file(a: argparse.Namespace) -> int:
    lay = Layout(a.dir)
    lay.check()
    _private(lay.token, "the token file")
    curve = lay.curve()
    deadline = time.monotonic() + a.timeout
    while True:
        eps = farms_dir_endpoints(lay.farms) or []
        if len(eps) >= a.wait:
            break
        if time.monotonic() > deadline:
            raise _refuse(f"{len(eps)} of {a.wait} farms registered in {lay.farms} after {a.timeout:g} s")
        time.sleep(0.25)
    doc = {
        "endpoints": eps,
        "token_file": str(lay.token),
        "curve": curve,
        "farms_dir": str(lay.farms),
        "written": time.time(),
    }
    try:
        write_private(a.out, json.dumps(doc, indent=2) + "\n")
    except PermissionError as e:
        raise _refuse(str(e)) from None
    print(
        f"{PROG}: {a.out}: {len(eps)} farms now, and those that register later; "
        f"connect with gymfarm.connect({str(a.out)!r})"
    )
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    lay = Layout(a.dir)
    lay.check()
    regs = farm_registrations(lay.farms) or []
    rows = []
    for r in regs:
        reachable = _reachable(r["endpoint"][len("tcp://") :])
        rows.append((r["name"], r["endpoint"], str(r.get("host", "")), str(r.get("pid", "")), reachable))
    print(f"{PROG}: {sum(1 for r in rows if r[4])}/{len(rows)} registered farms reachable")
    print(f"  {'name':32} {'endpoint':28} {'host':16} {'pid':>8} reachable")
    for name, ep, host, pid, ok in rows:
        print(f"  {name:32} {ep:28} {host:16} {pid:>8} {'yes' if ok else 'no'}")
    return 0


# -- the command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="one gymfarm farm per node, without Ray")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="make DIR's token, CURVE keys and farms/ (kept if there)")
    p.add_argument("dir")
    p.add_argument("--rotate", action="store_true", help="replace the token and keys")
    p = sub.add_parser("run", help="run this node's farm and register it in DIR/farms (gymfarm start args after --)")
    p.add_argument("dir")
    p.add_argument("--host", required=True, help="the address the farm binds (this node's)")
    p.add_argument("--port", type=int, default=5555, help="its native port (default %(default)s; 0: a free one)")
    p.add_argument("--workers", type=int, default=None, help="gymfarm start --workers")
    p.add_argument("--name", default=None, help="its registration's name (default HOSTNAME-ADDR-PORT)")
    p.add_argument("--gymfarm-bin", default=None, help="the gymfarm binary (default: GYMFARM_BIN_DIR, PATH)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to get ready (default %(default)s)")
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds a stopping farm gets before SIGKILL (default %(default)s)",
    )
    p = sub.add_parser("file", help="write a cluster file OUT for gymfarm.connect(OUT)")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--wait", type=int, default=0, help="first wait until N farms are registered")
    p.add_argument("--timeout", type=float, default=300.0, help="how long --wait waits (default %(default)s)")
    p = sub.add_parser("status", help="list the registered farms")
    p.add_argument("dir")
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The arguments; for ``run``, those after ``--`` go to ``gymfarm start`` as they are."""
    extra: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1 :]
    ap = build_parser()
    a = ap.parse_args(argv)
    if extra and a.command != "run":
        ap.error("only run takes gymfarm start arguments after --")
    a.extra = extra
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    return {"init": cmd_init, "run": cmd_run, "file": cmd_file, "status": cmd_status}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
