"""Worker restarts by reason over the farm's lifetime: `stats` keeps them after the restart
budget's window has forgotten them, and `gymfarm status` shows the totals and the last reason."""
import os
import signal
import subprocess
import time

from farm_fixture import GYMFARM, wait_until


def restarted(f, n):
    return sum(w["restarts"] for w in f.stats()["workers"]) >= n and all(
        w["state"] in ("idle", "assigned") for w in f.stats()["workers"])


def test_restarts_by_reason_outlive_the_budget_window(start_farm):
    farm = start_farm(workers=2, args=["--restart-window", "0.5"])
    with farm.connect() as f:
        for n in (1, 2):  # two kill -9s
            pid = f.stats()["workers"][0]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda n=n: restarted(f, n), 30)
        time.sleep(0.7)  # past the budget's window
        s = f.stats()
        assert s["restart_budget"]["used"] == 0
        assert s["restarts_total"] == 2
        assert s["restarts_by_reason"] == {"killed_sigkill": 2}
        assert s["last_restart"]["class"] == "killed_sigkill"
        assert "signal 9" in s["last_restart"]["reason"]
    r = subprocess.run([str(GYMFARM), "status", "--native-port", str(farm.port), "--runtime-dir",
                        str(farm.runtime_dir)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "restarts since start: 2 (killed_sigkill 2)" in r.stdout, r.stdout
    last = next(line for line in r.stdout.splitlines() if line.startswith("last restart:"))
    assert "killed by signal 9 (SIGKILL)" in last


def test_a_farm_without_restarts_reports_none(start_farm):
    farm = start_farm(workers=1)
    with farm.connect() as f:
        s = f.stats()
        assert s["restarts_total"] == 0 and s["restarts_by_reason"] == {} and "last_restart" not in s
