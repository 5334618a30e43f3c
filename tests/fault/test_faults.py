"""The failure contract of docs/reliability.md, each row against a real farm: envs that raise,
segfault and hang, kill -9 of a worker mid-step, SIGSTOP, and kill -9 of the broker. Each test
checks the typed error, its deadline, the untouched neighbours and no leftover processes, and runs
twice: with steps through shared memory (the default for a client on the farm's host) and over the
socket (GYMFARM_SHM=0)."""
import os
import signal
import threading
import time

import pytest

import gymfarm
from farm_fixture import pid_alive, step_in_background, wait_until

FAULTY = "gymfarm_test/Faulty-v0"
RAISE, SEGFAULT, HANG = 1, 2, 3


@pytest.fixture(autouse=True, params=["shm", "socket"])
def data_path(request, monkeypatch):
    """Which path steps take: the slab (docs/protocol.md "Shared memory") or the socket."""
    monkeypatch.setenv("GYMFARM_SHM", "1" if request.param == "shm" else "0")
    return request.param


class Neighbour:
    """Steps a CartPole on its own connection while a fault happens elsewhere."""

    def __init__(self, farm_process):
        self.conn = farm_process.connect(timeout=20)
        self.env = self.conn.make("CartPole-v1")
        self.env.reset(seed=0)
        self.steps = 0
        self.errors = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                _, _, term, trunc, _ = self.env.step(self.steps % 2)
                if term or trunc:
                    self.env.reset()
                self.steps += 1
            except Exception as e:  # recorded and asserted on
                self.errors.append(e)
                return

    def stop(self):
        self._stop.set()
        self._t.join(30)
        self.env.close()
        self.conn.close()


def worker_of(farm, instance_id):
    for w in farm.stats()["workers"]:
        if w["instance"] == instance_id:
            return w
    raise AssertionError("no worker holds " + instance_id)


def faulty_beside_a_neighbour(fp):
    """A connection, a CartPole neighbour stepping on its own, and a reset Faulty env with its worker's pid."""
    farm = fp.connect()
    nb = Neighbour(fp)
    env = farm.make(FAULTY)
    assert (env._slab is not None) == (os.environ["GYMFARM_SHM"] == "1")
    env.reset(seed=0)
    return farm, nb, env, worker_of(farm, env.instance_id)["pid"]


def all_idle(farm, n):
    ws = farm.stats()["workers"]
    return len(ws) == n and all(w["state"] in ("idle", "assigned") for w in ws)


def test_env_exception_is_env_error_and_instance_survives(start_farm):
    fp = start_farm(workers=2)
    farm = fp.connect()
    env = farm.make(FAULTY)
    env.reset(seed=0)
    with pytest.raises(gymfarm.EnvError) as e:
        env.step(RAISE)
    err = e.value
    assert err.code == "env_error"
    assert err.remote_type == "ValueError"
    assert err.remote_message == "boom at t=0"
    assert "Traceback" in err.remote_traceback and "boom at t=0" in err.remote_traceback
    assert "step" in err.remote_traceback
    obs, reward, *_ = env.step(0)  # the instance stays
    assert obs[0] == 1.0 and reward == 1.0
    with pytest.raises(gymfarm.EnvError, match="reset was asked to fail"):
        env.reset(options={"raise": True})
    env.close()


def test_segfault_gives_worker_crashed_and_neighbours_keep_stepping(start_farm):
    fp = start_farm(workers=3)
    farm, nb, env, pid = faulty_beside_a_neighbour(fp)
    before = nb.steps
    t0 = time.monotonic()
    with pytest.raises(gymfarm.WorkerCrashed) as e:
        env.step(SEGFAULT)
    assert time.monotonic() - t0 < 1.0
    assert e.value.details["signal"] == signal.SIGSEGV and e.value.details["pid"] == pid
    # every later request to that instance gets the same typed error
    for _ in range(3):
        with pytest.raises(gymfarm.WorkerCrashed):
            env.step(0)
    assert wait_until(lambda: nb.steps > before + 20, 5)
    # the pool is refilled with a fresh process and takes new envs
    assert wait_until(lambda: all_idle(farm, 3), 30)
    assert not pid_alive(pid)
    restarted = [w for w in farm.stats()["workers"] if w["restarts"] == 1]
    assert len(restarted) == 1 and "SIGSEGV" in restarted[0]["last_exit"]
    env2 = farm.make(FAULTY)
    env2.reset(seed=0)
    assert env2.step(0)[1] == 1.0
    nb.stop()
    assert nb.errors == []


def test_hang_past_step_timeout_is_timeout_and_worker_replaced(start_farm):
    fp = start_farm(workers=3, args=["--step-timeout", "1"])
    farm, nb, env, pid = faulty_beside_a_neighbour(fp)
    before = nb.steps
    t0 = time.monotonic()
    with pytest.raises(gymfarm.Timeout) as e:
        env.step(HANG)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 2.0, elapsed
    assert e.value.details["verb"] == "step" and e.value.details["deadline_ms"] == 1000
    assert nb.steps > before + 20, "a neighbour stalled while another env hung"
    with pytest.raises(gymfarm.WorkerCrashed, match="timed out"):
        env.step(0)
    assert wait_until(lambda: not pid_alive(pid), 5)
    assert wait_until(lambda: all_idle(farm, 3), 30)
    nb.stop()
    assert nb.errors == []


def test_kill_9_of_a_worker_mid_step(start_farm):
    fp = start_farm(workers=3)
    farm, nb, env, pid = faulty_beside_a_neighbour(fp)
    t, outcome = step_in_background(env, HANG)
    time.sleep(0.3)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t.join(10)
    assert isinstance(outcome.get("error"), gymfarm.WorkerCrashed), outcome
    assert outcome["error"].details["signal"] == signal.SIGKILL
    assert time.monotonic() - killed_at < 1.0
    with pytest.raises(gymfarm.WorkerCrashed, match="SIGKILL"):
        env.reset()
    before = nb.steps
    assert wait_until(lambda: nb.steps > before + 20, 5)
    assert wait_until(lambda: all_idle(farm, 3), 30)
    nb.stop()
    assert nb.errors == []


def test_sigstop_worker_is_detected_by_missing_heartbeats(start_farm):
    fp = start_farm(workers=2, args=["--step-timeout", "30"])
    farm = fp.connect()
    env = farm.make(FAULTY)
    env.reset(seed=0)
    pid = worker_of(farm, env.instance_id)["pid"]
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(gymfarm.WorkerCrashed, match="heartbeats"):
        env.step(0)
    assert time.monotonic() - t0 < 6.0
    assert wait_until(lambda: not pid_alive(pid), 5)
    assert wait_until(lambda: all_idle(farm, 2), 30)


def test_capacity_exhausted_when_every_worker_is_taken(start_farm):
    fp = start_farm(workers=2, args=["--max-workers", "2"])
    farm = fp.connect()
    a, b = farm.make("CartPole-v1"), farm.make("CartPole-v1")
    with pytest.raises(gymfarm.CapacityExhausted, match="--max-workers") as e:
        farm.make("CartPole-v1")
    assert e.value.details["workers"] == 2 and e.value.details["max_workers"] == 2
    a.close()
    c = farm.make("CartPole-v1")  # a closed env's worker returns to the pool
    c.close()
    b.close()


def test_kill_9_of_the_broker_leaves_no_orphans(start_farm):
    fp = start_farm(workers=3)
    farm = fp.connect(timeout=2)
    assert farm.is_local
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    remote = fp.connect(timeout=2, local=False)  # a client on ZeroMQ, as from another host
    assert not remote.is_local
    remote_env = remote.make("CartPole-v1")
    remote_env.reset(seed=0)
    workers = fp.worker_pids()  # the 3 workers and the zygote
    assert len(workers) == 4 and all(pid_alive(p) for p in workers)
    os.kill(fp.pid, signal.SIGKILL)
    fp.proc.wait(10)
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 5), "workers outlived the broker"
    with pytest.raises(gymfarm.FarmUnavailable, match="lost"):  # the local socket closed: at once
        env.step(0)
    assert not farm.is_local  # back on ZeroMQ, which would reconnect to a farm on the same port
    with pytest.raises(gymfarm.Timeout):
        env.step(0)
    with pytest.raises(gymfarm.Timeout):  # ZeroMQ cannot tell: the deadline answers
        remote_env.step(0)


def test_graceful_stop_closes_envs_and_exits_zero(start_farm, tmp_path):
    close_log = tmp_path / "closed.txt"
    fp = start_farm(workers=2, env_vars={"GYMFARM_TEST_CLOSE_LOG": str(close_log)})
    farm = fp.connect()
    env = farm.make("gymfarm_test/DictObs-v0")
    env.reset(seed=0)
    workers = fp.worker_pids()
    assert fp.stop() == 0  # SIGTERM: drain, close envs, stop workers, exit 0
    assert not any(pid_alive(p) for p in workers)
    assert "closed DictObs in" in close_log.read_text()
    assert "stopped" in fp.log()


def test_idle_ttl_closes_forgotten_rest_instances_only(start_farm):
    import requests

    fp = start_farm(workers=3, args=["--idle-ttl", "1"])
    farm = fp.connect()
    native = farm.make("CartPole-v1")  # a session's instance: --idle-ttl does not apply to it
    native.reset(seed=0)
    kept = requests.post(fp.rest_url + "envs/", json={"env_id": "CartPole-v1"}).json()["instance_id"]
    forgotten = requests.post(fp.rest_url + "envs/", json={"env_id": "CartPole-v1"}).json()["instance_id"]
    requests.post(fp.rest_url + f"envs/{kept}/reset/", json={})
    requests.post(fp.rest_url + f"envs/{forgotten}/reset/", json={})
    for _ in range(15):  # 1.5 s of activity keeps `kept` alive
        r = requests.post(fp.rest_url + f"envs/{kept}/step/", json={"action": 0})
        if r.json()["done"]:
            requests.post(fp.rest_url + f"envs/{kept}/reset/", json={})
        time.sleep(0.1)
    r = requests.post(fp.rest_url + f"envs/{forgotten}/step/", json={"action": 0})
    assert r.status_code == 400 and "unknown" in r.json()["message"].lower()
    assert requests.post(fp.rest_url + f"envs/{kept}/step/", json={"action": 0}).status_code == 200
    native.step(0)  # idle as long, and still there
    assert wait_until(lambda: sum(w["state"] == "idle" for w in farm.stats()["workers"]) == 1, 5)
    assert "idle-ttl" in fp.log() or "idle instance" in fp.log()


@pytest.mark.skipif(bool(os.environ.get("GYMFARM_SANITIZER")),
                    reason="an address-space limit cannot hold ASan's shadow memory")
def test_memory_limit_is_a_typed_error_naming_it(start_farm):
    fp = start_farm(workers=2, args=["--worker-memory-limit", "1536"])
    farm = fp.connect()
    env = farm.make(FAULTY)
    env.reset(seed=0)
    with pytest.raises(gymfarm.ResourceLimit, match="--worker-memory-limit") as e:
        env.step(4)
    assert e.value.details["bytes"] == 1536 << 20
    assert env.step(0)[1] == 1.0  # the instance stays


def test_cpu_limit_kills_the_worker_and_names_the_limit(start_farm):
    fp = start_farm(workers=2, args=["--worker-cpu-limit", "3", "--step-timeout", "60"])
    farm = fp.connect()
    env = farm.make(FAULTY)
    env.reset(seed=0)
    t0 = time.monotonic()
    with pytest.raises(gymfarm.ResourceLimit, match="--worker-cpu-limit") as e:
        env.step(HANG)
    assert time.monotonic() - t0 < 10
    assert e.value.details["signal"] == signal.SIGXCPU
    with pytest.raises(gymfarm.ResourceLimit):
        env.step(0)  # the tombstone repeats the reason
    assert wait_until(lambda: all_idle(farm, 2), 30)


def test_startup_crash_loop_is_budgeted_backed_off_and_shown_by_status(start_farm, tmp_path):
    """Workers that crash at start-up again and again: restarts stop at the budget instead of
    spinning, `gymfarm status` shows them with their reason, and the farm heals once the cause goes."""
    import subprocess

    from farm_fixture import GYMFARM

    flag = tmp_path / "crash-at-start"
    fp = start_farm(workers=2, args=["--restart-budget", "4", "--restart-window", "6", "--no-zygote"],
                    env_vars={"GYMFARM_TEST_CRASH_AT_START": str(flag)})
    farm = fp.connect()
    flag.touch()
    for pid in fp.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(3.0)
    stats = farm.stats()
    # Back-off alone would allow about 5 spawns per slot in 3 s; the budget allows 4 in all.
    assert sum(w["restarts"] for w in stats["workers"]) <= 4 + 2  # +2: the restarts after the kills
    assert stats["restart_budget"]["limit"] == 4
    assert stats["restart_budget"]["used"] == 4
    reasons = [e["reason"] for e in stats["recent_restarts"]]
    assert any("SIGSEGV" in r and "during start-up" in r for r in reasons), reasons
    assert "restart budget spent" in fp.log()
    status = subprocess.run([str(GYMFARM), "status", "--native-port", str(fp.port), "--runtime-dir",
                             str(fp.runtime_dir)], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert "recent restarts" in status.stdout and "during start-up" in status.stdout
    assert "restarts: 4 in the last 6 s (budget 4)" in status.stdout
    flag.unlink()
    assert wait_until(lambda: all_idle(farm, 2), 30), farm.stats()
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    env.step(0)
    env.close()
    farm.close()
