"""`--log-format json`: every line a farm writes to its log, from start through a worker's kill -9
to stop, is one JSON object with ts, level and msg; what workers write to stderr is wrapped."""
import json
import os
import re
import signal
import subprocess
import tempfile

from farm_fixture import GYMFARM, wait_until

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def parse_log(text):
    events = []
    for line in text.splitlines():
        e = json.loads(line)  # every line, no exceptions
        assert isinstance(e, dict) and TS.fullmatch(e["ts"]), line
        assert e["level"] in ("debug", "info", "warn", "error") and isinstance(e["msg"], str), line
        events.append(e)
    return events


def test_every_line_of_a_farm_run_is_json(start_farm, tmp_path):
    noisy = tmp_path / "mods"
    noisy.mkdir()
    # an --import module that writes to stderr in every worker, as env code may
    (noisy / "noisy_import.py").write_text('import sys\nsys.stderr.write("noisy \\"env\\" output\\n")\n'
                                           'sys.stderr.flush()\nsys.stderr.buffer.write(b"bad \\xff byte\\tend\\n")\n'
                                           'sys.stderr.flush()\n')
    farm = start_farm(workers=2, args=["--log-format", "json", "--import", "noisy_import"],
                      env_vars={"PYTHONPATH": str(noisy)})
    with farm.connect() as f:
        e = f.make("CartPole-v1")
        e.reset(seed=0)
        victim = next(w for w in f.stats()["workers"] if w["instance"] == e.instance_id)
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_until(lambda: any(w["restarts"] >= 1 and w["state"] == "idle" for w in f.stats()["workers"]), 30)
    assert farm.stop() == 0
    events = parse_log(farm.log())
    by_event = {e.get("event"): e for e in events}
    assert by_event["starting"]["workers"] == 2
    assert by_event["workers_ready"]["ready"] == 2
    assert by_event["farm_ready"]["native"] == farm.endpoint
    exit_ = by_event["worker_exit"]
    assert exit_["level"] == "warn" and exit_["pid"] == victim["pid"] and exit_["worker"] == victim["worker"]
    assert "signal 9" in exit_["reason"] or "SIGKILL" in exit_["reason"], exit_
    wrapped = [e for e in events if e.get("source") == "stderr"]
    assert any(e["msg"] == 'noisy "env" output' for e in wrapped), wrapped
    assert any(e["msg"] == "bad \ufffd byte\tend" for e in wrapped), wrapped  # not UTF-8: replaced
    assert any(e["msg"] == "stopped" for e in events)


def test_text_format_is_unchanged(start_farm):
    farm = start_farm(workers=1)
    assert farm.stop() == 0
    log = farm.log()
    assert "[gymfarm] starting 1 workers" in log and "[gymfarm] workers 1/1 ready in " in log
    assert not any(line.startswith("{") for line in log.splitlines())


def test_cli_errors_follow_the_format():
    with tempfile.TemporaryDirectory(prefix="gf-") as d:
        r = subprocess.run([str(GYMFARM), "status", "--log-format", "json", "--native-port", "9", "--runtime-dir", d],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    e = json.loads(line)
    assert e["level"] == "error" and e["msg"].startswith("no farm answers at tcp://127.0.0.1:9")
    r = subprocess.run([str(GYMFARM), "start", "--log-format", "yaml"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--log-format needs text or json" in r.stderr
