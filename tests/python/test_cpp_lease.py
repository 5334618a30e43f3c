"""The C++ client's lease (client/README.md): over TCP its hello asks for a lease, a background
thread renews it while the client is idle, and a C++ trainer that dies loses its instances within
the lease; keep_instances opts out. The trainer is tests/support/cpp_lease_client.cpp."""
import os
import signal
import subprocess
import time

import pytest

from farm_fixture import GYMFARM, wait_until

LEASE_S = 2.0
CLIENT = GYMFARM.parent / "gymfarm_lease_client"

pytestmark = pytest.mark.skipif(not CLIENT.exists(), reason="build the gymfarm_lease_client target")


def start_trainer(farm, n, *flags):
    """Runs the C++ trainer; returns (process, instance ids, lease_ms) once its envs are made."""
    p = subprocess.Popen([str(CLIENT), farm.endpoint, str(n), *flags], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    ids, lease_ms = [], None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline().strip()
        if not line or line == "ready":
            break
        if line.startswith("lease_ms "):
            lease_ms = int(line.split()[1])
        else:
            ids.append(line)
    assert len(ids) == n, f"the trainer made {ids}"
    return p, ids, lease_ms


def kill(p):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def live_instances(farm) -> int:
    with farm.connect(local=False) as f:
        return f.stats()["instances"]


@pytest.fixture
def farm(start_farm):
    return start_farm(workers=5, args=["--session-lease", str(LEASE_S), "--max-workers", "6"])


def test_killed_trainer_loses_its_instances_within_the_lease(farm):
    p, ids, lease_ms = start_trainer(farm, 5)
    assert lease_ms == int(LEASE_S * 1000)  # the farm granted the lease the hello asked for
    assert live_instances(farm) == 5
    killed = time.monotonic()
    kill(p)
    assert wait_until(lambda: live_instances(farm) == 0, LEASE_S + 3.0, interval=0.1), farm.log()
    assert time.monotonic() - killed >= LEASE_S * 0.5  # the lease ran out; nothing saw the TCP client go


def test_keep_instances_outlives_the_trainer(farm):
    p, ids, _ = start_trainer(farm, 5, "--keep-instances")
    kill(p)
    time.sleep(2 * LEASE_S + 1.0)  # past the lease, twice
    assert live_instances(farm) == 5


def test_an_idle_live_trainer_keeps_its_instances(farm):
    p, ids, _ = start_trainer(farm, 5)
    try:
        time.sleep(3 * LEASE_S + 1.0)  # idle for several leases: only its lease thread talks
        assert p.poll() is None
        assert live_instances(farm) == 5
    finally:
        kill(p)
    assert wait_until(lambda: live_instances(farm) == 0, LEASE_S + 3.0, interval=0.1)


def test_without_a_lease_nothing_renews(farm):
    """--no-lease (ClientOptions::lease = false): the farm grants none and the trainer's instances
    stay after it dies, until --idle-ttl or never (the behaviour before the lease)."""
    p, ids, lease_ms = start_trainer(farm, 2, "--no-lease")
    assert lease_ms == 0
    kill(p)
    time.sleep(LEASE_S + 1.5)
    assert live_instances(farm) == 2
