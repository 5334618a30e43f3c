"""`gymfarm start` shows the warm pool coming up: plain lines when piped (a change at most once a
second, the last `workers N/N ready in X s`), one line redrawn with `\\r` on a terminal."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time

from farm_fixture import GYMFARM, SUPPORT

PROGRESS = re.compile(r"workers (\d+)/(\d+) ready")


def farm_cmd(runtime_dir, workers, *extra):
    return [str(GYMFARM), "start", "--workers", str(workers), "--native-port", "0", "--port", "0",
            "--gymnasium-http-port", "0", "--runtime-dir", runtime_dir, "--import", "gymfarm_testenvs", *extra]


def farm_env():
    return dict(os.environ, PYTHONPATH=str(SUPPORT))


def read_until(proc_stream_fd, needle: bytes, timeout: float) -> bytes:
    """Bytes from fd until `needle` appears (or EOF, or the timeout)."""
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        r, _, _ = select.select([proc_stream_fd], [], [], 0.2)
        if not r:
            continue
        try:
            chunk = os.read(proc_stream_fd, 65536)
        except OSError:  # a pty whose other side closed
            break
        if not chunk:
            break
        out += chunk
    return out


def run_piped(workers, *extra):
    """Starts a foreground farm with stderr piped; returns its stderr once ready (then stops it)."""
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        p = subprocess.Popen(farm_cmd(d, workers, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=farm_env(), start_new_session=True)
        try:
            err = read_until(p.stderr.fileno(), b"ready in", 120)
            out = read_until(p.stdout.fileno(), b"gymie:", 30)
        finally:
            p.send_signal(signal.SIGTERM)
            rest, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        assert b"gymie:" in out, (out, err)
        return err.decode()


def test_piped_progress_is_plain_lines_ending_with_all_ready():
    err = run_piped(6)
    assert "\r" not in err and "\033" not in err
    lines = [line for line in err.splitlines() if PROGRESS.search(line)]
    assert lines, err
    counts = [tuple(map(int, PROGRESS.search(line).groups())) for line in lines]
    assert all(total == 6 for _, total in counts)
    assert [r for r, _ in counts] == sorted(r for r, _ in counts)  # never goes back
    assert re.fullmatch(r"\[gymfarm\] workers 6/6 ready in \d+\.\d s", lines[-1]), lines
    assert counts[0][0] < 6  # the first line comes before every worker is ready


def test_piped_progress_lines_are_at_most_one_a_second():
    """JSON logs carry each line's time: start_progress lines come at least a second apart."""
    err = run_piped(8, "--no-zygote", "--log-format", "json")  # fresh workers: seconds to come up
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    steps = [e for e in events if e.get("event") == "start_progress"]
    final = [e for e in events if e.get("event") == "workers_ready"]
    assert steps and len(final) == 1, err
    assert final[0]["ready"] == final[0]["workers"] == 8 and final[0]["msg"].startswith("workers 8/8 ready in ")

    def ts(e):
        return time.mktime(time.strptime(e["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + int(e["ts"][20:23]) / 1000

    gaps = [ts(b) - ts(a) for a, b in zip(steps, steps[1:], strict=False)]
    assert all(g >= 0.99 for g in gaps), gaps
    assert len({e["ready"] for e in steps}) == len(steps)  # a line only when the count changed
    assert len(steps) <= final[0]["seconds"] + 1.5
    if final[0]["seconds"] > 2.5:  # the pool took seconds: the count was shown on the way
        assert len(steps) >= 2, steps


def test_terminal_progress_redraws_one_line():
    master, slave = pty.openpty()
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        p = subprocess.Popen(farm_cmd(d, 6), stdout=subprocess.PIPE, stderr=slave, env=farm_env(),
                             start_new_session=True)
        os.close(slave)
        try:
            err = read_until(master, b"ready in", 120)
            err += read_until(master, b"\n", 5)
        finally:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=60)
            os.close(master)
    text = err.decode()
    assert p.returncode == 0
    assert "\r\033[K[gymfarm] workers " in text, repr(text)
    last = text.rsplit("\r\033[K", 1)[1]
    assert re.match(r"\[gymfarm\] workers 6/6 ready in \d+\.\d s\r?\n", last), repr(text)
    # everything before it is the status line redrawn in place: no newline between the redraws
    redraws = text[text.index("\r\033[K"):text.rindex("\r\033[K")]
    assert "\n" not in redraws, repr(text)


def test_detach_shows_progress_in_the_parent():
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        r = subprocess.run(farm_cmd(d, 4, "--detach"), capture_output=True, text=True, env=farm_env(), timeout=120)
        try:
            assert r.returncode == 0, r.stderr
            lines = [line for line in r.stderr.splitlines() if PROGRESS.search(line)]
            assert lines and re.fullmatch(r"\[gymfarm\] workers 4/4 ready in \d+\.\d s", lines[-1]), r.stderr
            assert "native:" in r.stdout
        finally:
            pid_file = next((f for f in os.listdir(d) if f.endswith(".pid")), None)
            if pid_file:
                with open(os.path.join(d, pid_file)) as f:
                    pid = int(f.read())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and os.path.exists(os.path.join(d, pid_file)):
                    time.sleep(0.05)
