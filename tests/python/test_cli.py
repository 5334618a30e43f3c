"""The gymfarm command line: help, flag errors, --detach, status, stop."""
import os
import re
import subprocess
import tempfile

import gymfarm
from farm_fixture import GYMFARM, SUPPORT, pid_alive, wait_until


def run(*args, timeout=60, env=None):
    return subprocess.run([str(GYMFARM), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_documents_every_flag():
    r = run("--help")
    assert r.returncode == 0
    for flag in ["--workers", "--host", "--native-port", "--python", "--step-timeout", "--make-timeout",
                 "--detach", "--import", "status", "stop"]:
        assert flag in r.stdout


def test_bad_input_is_refused_with_a_clear_message():
    r = run("start", "--workers", "zero")
    assert r.returncode == 2 and "--workers needs an integer" in r.stderr
    r = run("start", "--frobnicate")
    assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr
    r = run("launch")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = run("start", "--step-timeout", "-1")
    assert r.returncode == 2 and "positive number of seconds" in r.stderr
    r = run("start", "--python", "/nonexistent/python")
    assert r.returncode == 2 and "not an executable" in r.stderr


def test_status_and_stop_without_a_farm_fail_cleanly():
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        r = run("status", "--native-port", "9", "--runtime-dir", d)
        assert r.returncode == 1 and "no farm answers" in r.stderr
        r = run("stop", "--native-port", "9", "--runtime-dir", d)
        assert r.returncode == 1 and "no farm is running" in r.stderr


def test_detach_status_stop():
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        env = dict(os.environ, PYTHONPATH=str(SUPPORT))
        r = run("start", "--detach", "--workers", "3", "--native-port", "0", "--port", "0",
                "--gymnasium-http-port", "0", "--runtime-dir", d, "--import", "gymfarm_testenvs", env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        endpoint = next(line.split()[-1] for line in r.stdout.splitlines() if "native:" in line)
        port = endpoint.rsplit(":", 1)[1]
        with gymfarm.connect(endpoint) as farm:
            # --detach returned only once every worker was ready
            assert [w["state"] for w in farm.stats()["workers"]] == ["idle"] * 3
            e = farm.make("gymfarm_test/MultiBinary-v0")
            e.reset(seed=0)
            for _ in range(5):
                e.step(e.action_space.sample())
            pid = farm.stats()["pid"]
            workers = [w["pid"] for w in farm.stats()["workers"]]
            s = run("status", "--native-port", port, "--runtime-dir", d)
            assert s.returncode == 0
            lines = s.stdout.splitlines()
            # the reset and the 5 steps went through the instance's slab, past the broker's count
            served = re.search(r"(\d+) requests served \((\d+) more through shared memory\)", lines[0])
            assert served and int(served.group(2)) >= 6, lines[0]
            assert lines[1].split() == ["WORKER", "PID", "STATE", "INSTANCE", "OWNER", "ENV", "ID", "STEPS", "RSS",
                                        "PSS", "RESTARTS"]
            row = next(line for line in lines if e.instance_id in line).split()
            # the owner: this connection's session (its number, the client's name, the local socket)
            assert re.fullmatch(r"#\d+:gymfarm-python@local", row[4]), row
            assert row[2] == "assigned" and row[5] == "gymfarm_test/MultiBinary-v0" and row[6] == "5"
            assert row[8] == "MB" and float(row[7]) > 5
            assert row[10] == "MB" and 0 < float(row[9]) < float(row[7])  # forked from the zygote: shares pages
        r = run("stop", "--native-port", port, "--runtime-dir", d)
        assert r.returncode == 0 and "stopped" in r.stdout
        assert not pid_alive(pid)
        assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10)
        assert not os.path.exists(os.path.join(d, f"farm-{port}.pid"))
