"""`--port -1` turns the main gateway port (Gymie, gym-http-api) off, as `--gymnasium-http-port -1`
does its own; with every HTTP port off the farm starts no gateway thread and listens on no HTTP port."""
import os
import subprocess
from pathlib import Path

import requests

from farm_fixture import GYMFARM


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports the process listens on, from /proc (its sockets' inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def thread_names(pid: int) -> list[str]:
    return [(t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir()]


def status(farm) -> subprocess.CompletedProcess:
    return subprocess.run([str(GYMFARM), "status", "--native-port", str(farm.port), "--runtime-dir",
                           str(farm.runtime_dir)], capture_output=True, text=True, timeout=30)


def test_port_off_keeps_gymnasium_and_native(start_farm):
    farm = start_farm(workers=1, args=["--port", "-1"])
    # the ready text says the port is off
    assert farm.rest_url == "off"
    assert farm.gymnasium_url.startswith("http://127.0.0.1:")
    ports = listening_tcp_ports(farm.pid)
    gymnasium_port = int(farm.gymnasium_url.split(":")[2].split("/")[0])
    assert ports == {farm.port, gymnasium_port}, ports  # native and gymnasium-http-api, nothing else
    # the gymnasium-http-api port still serves
    r = requests.post(farm.gymnasium_url.rstrip("/") + "/envs/", json={"env_id": "CartPole-v1"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["instance_id"]) == 8
    # the native protocol works, and `gymfarm status`
    with farm.connect() as f:
        env = f.make("CartPole-v1")
        env.reset(seed=1)
        env.step(0)
        env.close()
    s = status(farm)
    assert s.returncode == 0 and "WORKER" in s.stdout, s.stderr


def test_every_http_port_off(start_farm):
    farm = start_farm(workers=1, args=["--port", "-1", "--gymnasium-http-port", "-1"])
    assert listening_tcp_ports(farm.pid) == {farm.port}
    assert farm.gymnasium_url == ""
    # no gateway threads: Beast's I/O threads and the blocking pool never start
    before = len(thread_names(farm.pid))
    with farm.connect() as f:
        env = f.make("CartPole-v1")
        env.reset(seed=0)
        for _ in range(3):
            env.step(1)
        env.close()
    s = status(farm)
    assert s.returncode == 0 and "WORKER" in s.stdout, s.stderr
    assert len(thread_names(farm.pid)) == before


def test_gateway_thread_count_drops_with_the_ports(start_farm):
    """The same farm with its HTTP ports on runs more threads (the gateway's I/O threads:
    --gateway-io-threads, 1 by default)."""
    off = start_farm(workers=1, args=["--port", "-1", "--gymnasium-http-port", "-1"])
    on = start_farm(workers=1)
    three = start_farm(workers=1, args=["--gateway-io-threads", "3"])
    assert len(thread_names(on.pid)) - len(thread_names(off.pid)) >= 1
    assert len(thread_names(three.pid)) - len(thread_names(on.pid)) == 2
    for bad in ("0", "65"):
        r = subprocess.run([str(GYMFARM), "start", "--gateway-io-threads", bad], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "--gateway-io-threads" in r.stderr, r.stderr


def test_port_flag_range():
    r = subprocess.run([str(GYMFARM), "start", "--port", "-2"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--port needs an integer from -1 to 65535" in r.stderr
