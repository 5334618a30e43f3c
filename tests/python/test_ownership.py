"""Instances belong to the client that made them (docs/protocol.md "Sessions"): other clients can
neither see nor use them, and a local client's instances close when its connection ends."""
import msgpack
import pytest

import gymfarm
from farm_fixture import wait_until


def instances(farm):
    with farm.connect(local=False) as op:
        return op.stats()["instances"]


def test_another_client_cannot_see_or_use_an_instance(start_farm):
    farm = start_farm(workers=2)
    with farm.connect() as a, farm.connect() as b:
        env = a.make("CartPole-v1")
        env.reset(seed=0)
        assert env.instance_id in a.list()
        assert env.instance_id not in b.list()
        for verb, body in [("step", {"action": 0}), ("reset", {}), ("close", {}), ("spaces", {}),
                           ("get_attr", {"name": "spec"})]:
            with pytest.raises(gymfarm.UnknownInstance):
                b.call(verb, env.instance_id, body)
        out = b.step_batch([(env.instance_id, 0)])
        assert isinstance(out[0], gymfarm.UnknownInstance)
        env.step(0)  # still the owner's
        env.close()


def test_a_shared_instance_is_usable_by_others(start_farm):
    farm = start_farm(workers=2)
    with farm.connect() as a, farm.connect() as b:
        made = a.call("make", body={"env_id": "CartPole-v1", "shared": True})
        iid = made["instance_id"]
        assert iid in b.list()
        b.call("reset", iid, {"seed": 0})
        b.call("step", iid, {"action": 1})
        b.call("close", iid)
        with pytest.raises(gymfarm.BadRequest, match="shared"):
            a.call("make", body={"env_id": "CartPole-v1", "shared": "yes"})


def test_a_local_clients_instances_close_when_it_disconnects(start_farm):
    farm = start_farm(workers=2)
    c = farm.connect()
    assert c.is_local
    c.make("CartPole-v1")
    c.make("CartPole-v1")
    assert instances(farm) == 2
    c.close()  # no env.close(): the connection's end is enough
    assert wait_until(lambda: instances(farm) == 0, 10)
    with farm.connect() as d:  # both workers are free again
        d.make("CartPole-v1")
        d.make("CartPole-v1")


def test_keep_instances_outlive_their_maker(start_farm):
    farm = start_farm(workers=1)
    c = farm.connect(keep_instances=True)
    assert c.is_local
    c.call("make", body={"env_id": "CartPole-v1", "shared": True})
    c.close()
    with farm.connect() as d:
        assert wait_until(lambda: instances(farm) == 1, 5)
        (iid,) = d.list()
        d.call("reset", iid, {"seed": 0})
        d.call("close", iid)


def test_hello_field_types_are_checked(start_farm):
    farm = start_farm(workers=1)
    import zmq
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(farm.endpoint)
    for bad in ({"keep_instances": 1}, {"client": 5}, {"lease": "yes"}):
        s.send_multipart([b"hello", b"", b"\x01" * 8, msgpack.packb({"version": 1} | bad)])
        assert s.poll(10000)
        _, status, body = s.recv_multipart()
        assert status == b"err" and msgpack.unpackb(body)["code"] == "bad_request", bad
    s.close(0)


CLIENT = """
import sys, time
sys.path.insert(0, {python!r})
import gymfarm
c = gymfarm.connect({endpoint!r}, local={local})
envs = [c.make("CartPole-v1") for _ in range(5)]
for e in envs:
    e.reset(seed=0)
print("ready", flush=True)
time.sleep(600)
"""


def _killed_client_releases(farm, local: bool, within: float):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    python = str(Path(__file__).resolve().parents[2] / "python")
    p = subprocess.Popen([sys.executable, "-c", CLIENT.format(python=python, endpoint=farm.endpoint, local=local)],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert instances(farm) == 5
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        t = time.monotonic()
        assert wait_until(lambda: instances(farm) == 0, within + 5)
        return time.monotonic() - t
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_a_sigkilled_local_client_releases_its_instances_at_once(start_farm):
    farm = start_farm(workers=5)
    assert _killed_client_releases(farm, local=True, within=2) < 2


def test_a_sigkilled_tcp_client_releases_its_instances_within_the_lease(start_farm):
    farm = start_farm(workers=5, args=["--session-lease", "2"])
    took = _killed_client_releases(farm, local=False, within=2)
    assert took < 2 + 1.5


def test_an_idle_tcp_client_keeps_its_lease_by_itself(start_farm):
    import time

    farm = start_farm(workers=1, args=["--session-lease", "1"])
    with farm.connect(local=False) as c:
        env = c.make("CartPole-v1")
        env.reset(seed=0)
        time.sleep(3.5)  # three leases without a request: the client's own pings renew it
        env.step(0)
        env.close()


def test_a_failed_make_leaves_nothing_behind(start_farm):
    farm = start_farm(workers=1)
    with farm.connect() as c:
        for bad in ["NoSuchEnv-v0", "gymfarm_test/Faulty-v0"]:
            try:
                c.call("make", body={"env_id": bad, "kwargs": {"no_such_kwarg": 1}})
            except gymfarm.GymfarmError:
                pass
            assert instances(farm) == 0
        c.make("CartPole-v1").close()  # the worker is free
