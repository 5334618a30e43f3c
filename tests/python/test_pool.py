"""The elastic pool (docs/operations.md "The pool"): --workers is the warm pool, a make beyond it
forks another worker from the zygote, --max-workers bounds the growth, and workers beyond the warm
pool retire once idle for --worker-idle-grace."""
import pytest

import gymfarm
from farm_fixture import wait_until


def live_workers(c):
    return len(c.stats()["workers"])


def test_makes_beyond_the_warm_pool_fork_workers_and_they_retire_when_idle(start_farm):
    farm = start_farm(workers=2, args=["--worker-idle-grace", "1"])
    with farm.connect() as c:
        envs = [c.make("CartPole-v1") for _ in range(7)]
        assert len({e.instance_id for e in envs}) == 7
        for i, e in enumerate(envs):
            e.reset(seed=i)
            e.step(0)
        stats = c.stats()
        assert stats["pool"]["warm"] == 2 and stats["pool"]["live"] == 7
        assert len({w["pid"] for w in stats["workers"]}) == 7  # one process each
        assert all(w["restarts"] == 0 for w in stats["workers"])  # growing is not restarting
        for e in envs:
            e.close()
        assert wait_until(lambda: live_workers(c) == 2, 20), c.stats()["workers"]
        # the pool grows again after retiring
        again = [c.make("CartPole-v1") for _ in range(4)]
        for e in again:
            e.reset(seed=0)
            e.close()


def test_max_workers_bounds_the_pool(start_farm):
    farm = start_farm(workers=1, args=["--max-workers", "3"])
    with farm.connect() as c:
        envs = [c.make("CartPole-v1") for _ in range(3)]
        with pytest.raises(gymfarm.CapacityExhausted, match="--max-workers 3") as e:
            c.make("CartPole-v1")
        assert e.value.details["max_workers"] == 3
        envs[0].close()
        c.make("CartPole-v1").close()  # room again
        for e in envs[1:]:
            e.close()


def test_the_pool_grows_in_throughput_mode(start_farm):
    farm = start_farm(workers=1, args=["--envs-per-worker", "2", "--max-workers", "2"])
    with farm.connect() as c:
        envs = [c.make("CartPole-v1") for _ in range(4)]
        assert c.stats()["pool"]["live"] == 2
        with pytest.raises(gymfarm.CapacityExhausted, match="2 workers hold 2 instances each"):
            c.make("CartPole-v1")
        for e in envs:
            e.reset(seed=0)
            e.close()


def test_many_makes_at_once_each_get_a_worker(start_farm):
    farm = start_farm(workers=2)
    with farm.connect() as c:
        made = c.call_many([("make", "", {"env_id": "CartPole-v1"})] * 12)
        assert all(isinstance(m, dict) for m in made), made
        ids = [m["instance_id"] for m in made]
        assert len(set(ids)) == 12
        c.close_many(ids)
