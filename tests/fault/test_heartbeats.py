"""Heartbeats that scale with the pool (docs/operations.md "Heartbeats"): the pool's heartbeats
into the broker stay under --heartbeat-rate, a worker that keeps replying sends none (a reply
counts), and a SIGSTOPped worker is still found once its longer period has passed five times."""
import os
import signal
import time

import pytest

import gymfarm
from farm_fixture import pid_alive, wait_until


def heartbeats(farm):
    return farm.stats()["heartbeats"]


def received_over(farm, seconds):
    before = heartbeats(farm)["received"]
    time.sleep(seconds)
    return heartbeats(farm)["received"] - before


def test_the_pools_heartbeats_stay_under_the_rate(start_farm):
    fp = start_farm(workers=4, args=["--heartbeat-rate", "10"])
    farm = fp.connect()
    assert wait_until(lambda: heartbeats(farm)["period_ms"] == 400, 5)  # 4 workers at 10/s: every 400 ms
    assert heartbeats(farm)["max_rate"] == 10
    time.sleep(0.5)  # every worker has been told (in answer to its next heartbeat)
    n = received_over(farm, 3.0)
    assert 8 <= n <= 3.0 * 10 * 1.5 + 4, n  # every 100 ms it would be 120
    env = farm.make("CartPole-v1")  # the farm serves as before
    env.reset(seed=0)
    env.step(0)
    env.close()


def test_a_worker_that_keeps_replying_sends_no_heartbeats(start_farm):
    fp = start_farm(workers=1, args=["--worker-idle-grace", "0"])
    farm = fp.connect()
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    idle = received_over(farm, 1.5)
    assert idle >= 8, idle  # one worker every 100 ms
    before = heartbeats(farm)["received"]
    t0 = time.monotonic()
    steps = 0
    while time.monotonic() - t0 < 1.5:
        _, _, term, trunc, _ = env.step(steps % 2)
        if term or trunc:
            env.reset()
        steps += 1
    busy = heartbeats(farm)["received"] - before
    assert steps > 100
    # its replies were its heartbeats (a few may still come where this client was slow to step)
    assert busy <= max(3, idle // 3), (busy, idle)
    env.close()


def test_a_stopped_worker_is_found_within_five_of_its_longer_periods(start_farm):
    # 2 workers at 2 heartbeats a second beat once a second: a silence of max(3 s, 5 x 1 s) kills
    fp = start_farm(workers=2, args=["--heartbeat-rate", "2", "--step-timeout", "60"])
    farm = fp.connect()
    assert wait_until(lambda: heartbeats(farm)["period_ms"] == 1000, 5)
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    time.sleep(1.5)  # told its period
    pid = next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == env.instance_id)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(gymfarm.WorkerCrashed, match="heartbeats"):
        env.step(0)
    waited = time.monotonic() - t0
    assert 3.5 < waited < 9.0, waited
    assert wait_until(lambda: not pid_alive(pid), 5)
