"""The failure contract on the shared-memory path (docs/protocol.md "Shared memory") where it
differs from the socket's (tests/fault/test_faults.py runs the common rows on both): a client that
dies holding slabs, a broker killed while a client waits in a slab, env code that writes past its
slab, and a worker killed while it writes a reply."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import gymfarm
from farm_fixture import ROOT, pid_alive, step_in_background, wait_until
from gymfarm import slab

FAULTY = "gymfarm_test/Faulty-v0"
HANG = 3


def slab_maps(pid):
    """How many slab mappings process ``pid`` has."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return sum(1 for line in f if "gymfarm-slab" in line)
    except OSError:
        return 0


def worker_pid(farm, instance_id):
    return next(w["pid"] for w in farm.stats()["workers"] if w["instance"] == instance_id)


def test_a_client_that_dies_holding_slabs_leaves_none_behind(start_farm):
    fp = start_farm(workers=3)
    script = textwrap.dedent(f"""
        import sys, time, gymfarm
        farm = gymfarm.connect({fp.endpoint!r})
        envs = [farm.make("CartPole-v1") for _ in range(3)]
        assert all(e._slab is not None for e in envs)
        for e in envs:
            e.reset(seed=0)
            e.step(0)
        print(" ".join(e.instance_id for e in envs), flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}  # this tree's client
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ids = client.stdout.readline().split()
        assert len(ids) == 3, "the client did not make its envs"
        farm = fp.connect()
        pids = [w["pid"] for w in farm.stats()["workers"] if w["instance"] in ids]
        assert len(pids) == 3 and all(slab_maps(p) == 1 for p in pids)
        per_slab = 2 if slab._slab_port is not None else 1  # the compiled step maps it too (python/ext)
        assert slab_maps(fp.pid) == 3 and slab_maps(client.pid) == 3 * per_slab
        client.kill()  # kill -9 while it holds three slabs
        client.wait(10)
        # its session ends with its socket: the instances close, and every mapping goes
        assert wait_until(lambda: farm.list() == {}, 10)
        assert wait_until(lambda: slab_maps(fp.pid) == 0 and all(slab_maps(p) == 0 for p in pids), 10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)


def test_the_broker_killed_while_a_client_waits_in_a_slab(start_farm, slab_step):
    fp = start_farm(workers=2)
    farm = fp.connect(timeout=30)
    env = farm.make(FAULTY)
    assert env._slab is not None
    env.reset(seed=0)
    t, outcome = step_in_background(env, HANG)
    time.sleep(0.3)
    os.kill(fp.pid, signal.SIGKILL)
    t.join(10)
    assert not t.is_alive(), "the client still waits in the slab of a farm that is gone"
    assert isinstance(outcome.get("error"), gymfarm.FarmUnavailable), outcome
    assert outcome["elapsed"] < 3.0


def test_a_worker_killed_while_it_answers_gives_worker_crashed_never_a_torn_reply(start_farm, slab_step):
    # Pong's 100 KB frames take the worker a while to write; kill -9 lands at random moments in
    # many steps: each step returns a whole observation or raises WorkerCrashed.
    fp = start_farm(workers=2)
    farm = fp.connect(timeout=30)
    crashed = whole = 0
    for round_ in range(6):
        env = farm.make("ALE/Pong-v5")
        assert env._slab is not None
        obs, _ = env.reset(seed=round_)
        pid = worker_pid(farm, env.instance_id)
        killer = threading.Timer(0.05 + 0.03 * round_, os.kill, (pid, signal.SIGKILL))
        killer.start()
        try:
            for _ in range(2000):
                obs, *_ = env.step(0)
                assert obs.shape == (210, 160, 3) and obs.dtype.name == "uint8"
                whole += 1
        except gymfarm.WorkerCrashed as e:
            crashed += 1
            assert e.details.get("signal") == signal.SIGKILL
        killer.join()
        env.close()
    assert crashed == 6 and whole > 0


def test_env_code_that_writes_past_its_slab_takes_down_its_worker_only(start_farm):
    fp = start_farm(workers=2)
    farm = fp.connect()
    neighbour = farm.make("CartPole-v1")
    neighbour.reset(seed=0)
    env = farm.make("gymfarm_test/SlabVandal-v0")
    assert env._slab is not None
    env.reset(seed=0)
    pid = worker_pid(farm, env.instance_id)
    with pytest.raises(gymfarm.WorkerCrashed) as e:  # the guard page after the slab
        env.unwrapped.write_past_slab()
    assert e.value.details.get("signal") == signal.SIGSEGV
    assert wait_until(lambda: not pid_alive(pid), 5)
    with pytest.raises(gymfarm.WorkerCrashed, match="SIGSEGV"):
        env.step(0)
    for i in range(50):  # the neighbour and this client go on
        _, _, term, trunc, _ = neighbour.step(i % 2)
        if term or trunc:
            neighbour.reset()
