"""`gymfarm status --watch`: the table again and again (redrawn with ANSI on a terminal, one after
another when piped); exit 0 on Ctrl-C, 3 with a clear message when the farm goes away."""
import os
import pty
import select
import signal
import subprocess
import time

from farm_fixture import GYMFARM


def watch_cmd(farm, *extra):
    return [str(GYMFARM), "status", "--watch", "--interval", "0.3", "--native-port", str(farm.port),
            "--runtime-dir", str(farm.runtime_dir), *extra]


def read_until(fd, pred, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    while not pred(out) and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_piped_watch_repeats_the_table_and_stops_on_ctrl_c(start_farm):
    farm = start_farm(workers=2)
    p = subprocess.Popen(watch_cmd(farm), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = read_until(p.stdout.fileno(), lambda b: b.count(b"WORKER") >= 3, 30)
    finally:
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=15)
    text = (out + rest).decode()
    assert p.returncode == 0, err
    assert "\033" not in text
    tables = [t for t in text.split("\n\n") if t.strip()]
    assert len(tables) >= 3
    for t in tables:
        lines = t.splitlines()
        assert "every 0.3 s" in lines[0]
        assert lines[2].split()[:3] == ["WORKER", "PID", "STATE"]
        assert len([line for line in lines if line.split()[2:3] in (["idle"], ["assigned"], ["starting"])]) == 2


def test_terminal_watch_redraws_and_exits_3_when_the_farm_goes_away(start_farm):
    farm = start_farm(workers=2)
    master, slave = pty.openpty()
    p = subprocess.Popen(watch_cmd(farm), stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        out = read_until(master, lambda b: b.count(b"\033[H\033[2J") >= 2, 30)
        assert out.count(b"\033[H\033[2J") >= 2 and b"WORKER" in out, out
        farm.stop()
        rc = p.wait(timeout=20)  # the next read fails within its 3 s timeout
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        os.close(master)
    assert rc == 3, err
    assert "went away" in err and str(farm.port) in err


def test_watch_without_a_farm_exits_1(tmp_path):
    r = subprocess.run([str(GYMFARM), "status", "--watch", "--native-port", "9", "--runtime-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no farm answers" in r.stderr


def test_watch_goes_only_with_status():
    r = subprocess.run([str(GYMFARM), "stop", "--watch"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--watch goes with status" in r.stderr
