"""Finding 11: SIGSTOP the broker for 10 s, then SIGCONT, and a healthy worker was killed 'after
its heartbeats stopped'. Liveness is now judged on time the broker was running.

The old broker failed when the stop landed between reading its sockets and checking its timers
(or when it woke before ZeroMQ had handed it the queued heartbeats), so the test keeps the broker
busy with pipelined pings while it stops it, several times."""
import os
import signal
import threading
import time

import gymfarm


def test_a_paused_broker_kills_no_healthy_worker(start_farm):
    farm = start_farm(workers=2)
    stop = threading.Event()

    def pinger():
        with gymfarm.connect(farm.endpoint, local=False, timeout=60) as p:
            while not stop.is_set():
                p.call_many([("ping", "", None)] * 64)

    with gymfarm.connect(farm.endpoint, local=False, timeout=60) as c:
        env = c.make("CartPole-v1")
        env.reset(seed=0)
        before = {w["worker"]: w["pid"] for w in c.stats()["workers"]}
        t = threading.Thread(target=pinger, daemon=True)
        t.start()
        try:
            for _ in range(3):
                time.sleep(0.5)
                os.kill(farm.pid, signal.SIGSTOP)
                try:
                    time.sleep(4)  # past the 3 s heartbeat timeout
                finally:
                    os.kill(farm.pid, signal.SIGCONT)
        finally:
            stop.set()
            t.join(60)
        time.sleep(1)
        env.step(0)  # the instance survived
        stats = c.stats()
        assert {w["worker"]: w["pid"] for w in stats["workers"]} == before, farm.log()
        assert all(w["restarts"] == 0 for w in stats["workers"]), stats["workers"]
        assert "heartbeats stopped" not in farm.log()
        env.close()
