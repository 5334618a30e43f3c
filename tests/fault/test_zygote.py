"""Workers forked from the zygote keep the failure contract of fresh workers: the broker is their
parent and reaps them, they have their own random state, the farm survives the zygote's death (it
starts later workers fresh), and --no-zygote starts every worker fresh."""
import os
import signal

import gymfarm
from farm_fixture import children_of, pid_alive, proc_comm, wait_until

FAULTY = "gymfarm_test/Faulty-v0"


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def zygote_of(fp):
    return [p for p in children_of(fp.pid) if proc_comm(p) == "gf-zygote"]


def test_forked_workers_are_the_brokers_children_with_their_own_random_state(start_farm):
    fp = start_farm(workers=3)
    farm = fp.connect()
    assert len(zygote_of(fp)) == 1
    pids = {w["pid"] for w in farm.stats()["workers"]}
    assert pids <= set(children_of(fp.pid))  # re-parented to the broker, which reaps them
    assert {proc_comm(p) for p in pids} == {"gf-worker"}
    envs = [farm.make(FAULTY) for _ in range(3)]
    draws = {farm.call("call", e.instance_id, {"name": "global_random"})["value"] for e in envs}
    assert len(draws) == 3, "workers share the zygote's NumPy random state"
    for e in envs:
        e.close()


def test_the_farm_survives_its_zygote_and_starts_later_workers_fresh(start_farm):
    fp = start_farm(workers=2)
    farm = fp.connect()
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    (zygote,) = zygote_of(fp)
    os.kill(zygote, signal.SIGKILL)
    assert wait_until(lambda: "workers start fresh" in fp.log(), 10), fp.log()
    env.step(0)  # workers forked before keep serving
    victim = next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == env.instance_id)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(victim), 10)
    assert wait_until(lambda: all(w["state"] in ("idle", "assigned") and w["pid"] != victim
                                  for w in farm.stats()["workers"]), 60)
    fresh = [w["pid"] for w in farm.stats()["workers"] if w["state"] == "idle"]
    assert fresh and proc_comm(fresh[0]) != "gf-worker"  # a fresh process, not a fork of the zygote
    assert b"--identity" in cmdline(fresh[0])
    again = farm.make("CartPole-v1")
    again.reset(seed=0)
    again.step(1)
    farm.close()


def test_no_zygote_starts_each_worker_fresh(start_farm):
    fp = start_farm(workers=2, args=["--no-zygote"])
    farm = fp.connect()
    assert zygote_of(fp) == []
    kids = children_of(fp.pid)
    assert len(kids) == 2 and all(b"--identity" in cmdline(p) for p in kids)
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    env.step(0)
    farm.close()
    if os.environ.get("GYMFARM_SANITIZER") == "asan":
        return  # an address-space limit cannot hold ASan's shadow memory
    with_limit = start_farm(workers=1, args=["--no-zygote", "--worker-memory-limit", "1536"]).connect()
    e = with_limit.make(FAULTY)
    e.reset(seed=0)
    try:
        e.step(4)
        raise AssertionError("the 4 GB allocation should fail under the limit")
    except gymfarm.ResourceLimit:
        pass
    with_limit.close()


def test_a_stopped_zygote_is_killed_and_workers_start_fresh(start_farm):
    fp = start_farm(workers=2)
    farm = fp.connect()
    (zygote,) = zygote_of(fp)
    os.kill(zygote, signal.SIGSTOP)
    victim = farm.stats()["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)  # its replacement is asked of the stopped zygote
    assert wait_until(lambda: "did not answer a fork request" in fp.log(), 15), fp.log()
    assert wait_until(lambda: not pid_alive(zygote), 10)
    assert wait_until(lambda: all(w["state"] in ("idle", "assigned") for w in farm.stats()["workers"]), 60)
    env = farm.make("CartPole-v1")
    env.reset(seed=0)
    env.step(0)
    farm.close()
