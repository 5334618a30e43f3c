"""Finding 5, runtime directory trust: a runtime directory (or a parent) that another user owns or
may write to is refused, and the farm's files in it (token, log, pid file) are created fresh with
O_EXCL | O_NOFOLLOW and read back only when they are regular files of ours. Files are planted as
another user (nobody) with chown, which needs root; without root those cases skip and the ones a
single user can stage (symlinks, modes) still run."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from farm_fixture import GYMFARM, SUPPORT, pid_alive, wait_until

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="planting files owned by another user needs root (chown)")


def other_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


OTHER = other_uid()


def run(*args, env=None, timeout=60):
    return subprocess.run([str(GYMFARM), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env if env is not None else dict(os.environ))


def farm_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(SUPPORT))
    env.pop("GYMFARM_TOKEN", None)
    env.update(extra)
    return env


def stop_pid(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not pid_alive(pid), 30), f"farm pid {pid} did not stop"


def try_start(runtime_dir=None, *extra, env=None):
    """`gymfarm start --detach` with one worker; a farm that did start is stopped again by its pid
    (the result keeps what it printed)."""
    args = ["start", "--detach", "--workers", "1", "--native-port", "0", "--port", "0", "--gymnasium-http-port", "0",
            "--import", "gymfarm_testenvs"]
    if runtime_dir is not None:
        args += ["--runtime-dir", str(runtime_dir)]
    r = run(*args, *extra, env=env or farm_env(), timeout=120)
    m = re.search(r"farm ready with \d+ workers \(pid (\d+)\)", r.stdout)
    if m:
        stop_pid(int(m.group(1)))
    return r


def start_detached(runtime_dir=None, *extra, env=None):
    """Starts a farm that must start; returns (pid, port, token, stdout)."""
    args = ["start", "--detach", "--workers", "1", "--native-port", "0", "--port", "0", "--gymnasium-http-port", "0",
            "--import", "gymfarm_testenvs"]
    if runtime_dir is not None:
        args += ["--runtime-dir", str(runtime_dir)]
    r = run(*args, *extra, env=env or farm_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"\(pid (\d+)\)", r.stdout).group(1))
    port = int(re.search(r"native:\s+tcp://[^:]+:(\d+)", r.stdout).group(1))
    m = re.search(r"token:\s+(\S+)", r.stdout)
    return pid, port, (m.group(1) if m else ""), r.stdout


@pytest.fixture
def scratch():
    """A private scratch directory under /tmp (short: the farm's socket paths must fit)."""
    d = Path(tempfile.mkdtemp(prefix="gf-rt-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def refused(r, path, why):
    return r.returncode == 2 and str(path) in r.stderr and why in r.stderr


# -- the directory -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o722])
def test_a_runtime_dir_others_may_write_is_refused(scratch, mode):
    rt = private_dir(scratch / "rt")
    os.chmod(rt, mode)
    r = try_start(rt)
    assert refused(r, rt, "writable by group or others"), (r.returncode, r.stderr)
    assert os.listdir(rt) == []


def test_a_symlink_as_the_runtime_dir_is_refused(scratch):
    real = private_dir(scratch / "real")
    link = scratch / "rt"
    link.symlink_to(real)
    r = try_start(link)
    assert refused(r, link, "symlink"), (r.returncode, r.stderr)
    assert os.listdir(real) == []


@needs_root
def test_a_runtime_dir_owned_by_another_user_is_refused(scratch):
    rt = private_dir(scratch / "rt")
    os.chown(rt, OTHER, OTHER)
    r = try_start(rt)
    assert refused(r, rt, f"owned by uid {OTHER}"), (r.returncode, r.stderr)
    assert os.listdir(rt) == []


@needs_root
def test_a_parent_owned_by_another_user_is_refused(scratch):
    parent = scratch / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(parent, OTHER, OTHER)  # they may swap whatever we would create in it
    rt = parent / "rt"
    r = try_start(rt)
    assert refused(r, parent, "parent directory"), (r.returncode, r.stderr)
    assert not rt.exists()


def test_a_parent_others_may_write_is_refused(scratch):
    parent = scratch / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)  # writable and not sticky: anyone may rename the runtime dir away
    rt = parent / "rt"
    r = try_start(rt)
    assert refused(r, parent, "writable by group or others"), (r.returncode, r.stderr)
    assert not rt.exists()


def test_the_default_runtime_dir_is_created_private_and_refused_when_not(scratch):
    xdg = scratch / "xdg"  # absent: the farm creates it and the default under it, both 0700
    env = farm_env(XDG_RUNTIME_DIR=str(xdg))
    default = xdg / "gymfarm"
    pid, port, _, _ = start_detached(env=env)
    try:
        assert stat.S_IMODE(os.lstat(xdg).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(default).st_mode) == 0o700
        assert (default / f"farm-{port}.pid").read_text().strip() == str(pid)
    finally:
        r = run("stop", "--native-port", str(port), env=env)  # finds it through the default too
        stop_pid(pid)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stderr

    os.chmod(default, 0o750)  # ours, not writable by others, but the default must be private
    r = try_start(env=env)
    assert refused(r, default, "must be mode 0700"), (r.returncode, r.stderr)
    assert stat.S_IMODE(os.lstat(default).st_mode) == 0o750
    if ROOT:
        os.chmod(default, 0o700)
        os.chown(default, OTHER, OTHER)  # a predictable name someone else made first
        r = try_start(env=env)
        assert refused(r, default, f"owned by uid {OTHER}"), (r.returncode, r.stderr)


# -- the files in it -----------------------------------------------------------------------------


def test_a_planted_token_symlink_is_not_followed(scratch):
    rt = private_dir(scratch / "rt")
    victim = scratch / "victim"
    victim.write_text("precious\n")
    (rt / "token").symlink_to(victim)
    r = try_start(rt, "--require-token")
    assert refused(r, rt / "token", "symlink"), (r.returncode, r.stderr)
    assert victim.read_text() == "precious\n"
    assert os.path.islink(rt / "token")


@needs_root
def test_a_token_file_planted_by_another_user_is_refused(scratch):
    rt = private_dir(scratch / "rt")
    planted = rt / "token"
    planted.write_text("planted-token-0123456789abcdef\n")
    os.chmod(planted, 0o644)
    os.chown(planted, OTHER, OTHER)
    r = try_start(rt, "--require-token")
    assert refused(r, planted, f"owned by uid {OTHER}"), (r.returncode, r.stderr)
    assert planted.read_text() == "planted-token-0123456789abcdef\n"
    assert os.stat(planted).st_uid == OTHER


def test_a_planted_log_symlink_is_not_followed(scratch):
    rt = private_dir(scratch / "rt")
    victim = scratch / "victim"
    victim.write_text("precious\n")
    log = rt / "farm-0.log"  # --native-port 0 names the log farm-0.log
    log.symlink_to(victim)
    r = try_start(rt)
    assert refused(r, log, "symlink"), (r.returncode, r.stderr)
    assert victim.read_text() == "precious\n"


@needs_root
def test_a_log_file_planted_by_another_user_is_refused(scratch):
    rt = private_dir(scratch / "rt")
    log = rt / "farm-0.log"
    log.write_text("theirs\n")
    os.chown(log, OTHER, OTHER)
    r = try_start(rt)
    assert refused(r, log, f"owned by uid {OTHER}"), (r.returncode, r.stderr)
    assert log.read_text() == "theirs\n"


def test_status_does_not_read_a_planted_token(start_farm, scratch):
    f = start_farm(workers=1, args=["--require-token"])
    token = f.runtime_dir / "token"
    env = farm_env()
    status = ["status", "--native-port", str(f.port), "--runtime-dir", str(f.runtime_dir)]
    copy = scratch / "token-elsewhere"
    copy.write_text(f.token)
    token.unlink()
    token.symlink_to(copy)  # the right token, but through a symlink: not followed
    r = run(*status, env=env)
    assert r.returncode == 1 and "symlink" in r.stderr, (r.returncode, r.stdout, r.stderr)
    if ROOT:
        token.unlink()
        token.write_text(f.token)
        os.chown(token, OTHER, OTHER)  # the right token, in a file of another user's: not trusted
        r = run(*status, env=env)
        assert r.returncode == 1 and f"owned by uid {OTHER}" in r.stderr, (r.returncode, r.stdout, r.stderr)
    token.unlink()
    token.write_text(f.token)  # a token file of ours: read
    os.chmod(token, 0o600)
    r = run(*status, env=env)
    assert r.returncode == 0 and "WORKER" in r.stdout, r.stderr


@pytest.mark.parametrize("planted_as", ["symlink", "other_user"])
def test_stop_does_not_trust_a_planted_pid_file(scratch, planted_as):
    if planted_as == "other_user" and not ROOT:
        pytest.skip("planting a file owned by another user needs root (chown)")
    rt = private_dir(scratch / "rt")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = rt / "farm-9.pid"  # nothing listens on port 9
        if planted_as == "symlink":
            target = scratch / "pid"
            target.write_text(f"{sleeper.pid}\n")
            pid_file.symlink_to(target)
        else:
            pid_file.write_text(f"{sleeper.pid}\n")
            os.chown(pid_file, OTHER, OTHER)
        r = run("stop", "--native-port", "9", "--runtime-dir", str(rt))
        assert r.returncode == 1 and "no farm is running" in r.stderr, (r.returncode, r.stdout, r.stderr)
        assert str(pid_file) in r.stderr
        assert sleeper.poll() is None, "stop signalled the pid a planted pid file named"
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_stale_files_of_ours_are_replaced_and_stale_socket_links_only_unlinked(scratch):
    rt = private_dir(scratch / "rt")
    (rt / "token").write_text("stale-token-0123456789abcdef\n")
    os.chmod(rt / "token", 0o644)
    (rt / "farm-0.log").write_text("a dead farm's log\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    victim = scratch / "victim"
    victim.write_text("precious\n")
    stale_link = rt / f"native-{dead.pid}.sock"
    stale_link.symlink_to(victim)  # the broker's stale-socket sweep must remove the link, not its target
    pid, port, token, _ = start_detached(rt, "--require-token")
    try:
        assert token and (rt / "token").read_text() == token
        st = os.lstat(rt / "token")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert "a dead farm's log" not in (rt / "farm-0.log").read_text()
        assert not os.path.lexists(stale_link)
        assert victim.read_text() == "precious\n"
    finally:
        r = run("stop", "--native-port", str(port), "--runtime-dir", str(rt))
        stop_pid(pid)
    assert r.returncode == 0, r.stderr
    assert not (rt / f"farm-{port}.pid").exists()


def test_a_detached_start_that_fails_shows_its_log(scratch):
    rt = private_dir(scratch / "rt")
    with socket.socket() as busy:  # the native port is taken: the farm cannot start
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("start", "--detach", "--workers", "1", "--native-port", str(port), "--port", "0",
                "--gymnasium-http-port", "0", "--runtime-dir", str(rt), env=farm_env(), timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    log = rt / f"farm-{port}.log"
    assert f"its log ({log}) ends with" in r.stderr
    assert "cannot listen on" in r.stderr  # the log's lines, read back through the fd it was made with
    assert stat.S_IMODE(os.lstat(log).st_mode) == 0o600
