"""Finding 11: SIGSTOP the broker for 10 s, then SIGCONT, and a healthy worker was killed 'after
its heartbeats stopped'. Liveness is now judged on time the broker was running."""
import os
import signal
import time

import gymfarm


def test_a_paused_broker_kills_no_healthy_worker(start_farm):
    farm = start_farm(workers=2)
    with gymfarm.connect(farm.endpoint, local=False, timeout=60) as c:
        env = c.make("CartPole-v1")
        env.reset(seed=0)
        before = {w["worker"]: w["pid"] for w in c.stats()["workers"]}
        os.kill(farm.pid, signal.SIGSTOP)
        try:
            time.sleep(8)  # well past the 3 s heartbeat timeout
        finally:
            os.kill(farm.pid, signal.SIGCONT)
        time.sleep(2)
        env.step(0)  # the instance survived
        stats = c.stats()
        assert {w["worker"]: w["pid"] for w in stats["workers"]} == before
        assert all(w["restarts"] == 0 for w in stats["workers"]), stats["workers"]
        assert "heartbeats stopped" not in farm.log()
        env.close()
