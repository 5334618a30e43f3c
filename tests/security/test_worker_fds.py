"""Finding: the zygote and every worker held the gateway's listening sockets, inherited from the
broker: env code could accept and answer real HTTP requests, and a process the env started kept
the ports bound after the farm was killed, so the next `gymfarm start` on them failed with
"Address already in use".

Now a worker (and the zygote) closes every descriptor it inherited before any env code runs, at
start and in every forked worker, and the broker's own descriptors are close-on-exec. These tests
list /proc/PID/fd of the zygote, of every worker and of a process env code forked."""
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

import pytest

from farm_fixture import FarmProcess, pid_alive, proc_comm

O_CLOEXEC = 0o2000000


def fd_targets(pid: int) -> dict[int, str]:
    out = {}
    for p in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out[int(p.name)] = os.readlink(p)
        except OSError:
            pass  # closed meanwhile
    return out


def inode(target: str, kind: str) -> int:
    """socket:[123] -> 123 for kind "socket"; 0 when target is something else."""
    prefix = kind + ":["
    return int(target[len(prefix):-1]) if target.startswith(prefix) else 0


def farm_ports(f: FarmProcess) -> set[int]:
    ports = {f.port}
    for url in (f.rest_url, f.gymie_url, f.gymnasium_url):
        if url:
            ports.add(urlparse(url).port)
    return ports


def tcp_sockets(ports: set[int], listen_only: bool) -> set[int]:
    """Inodes of the TCP sockets whose local port is one of ports (LISTEN ones only if asked)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports and (fields[3] == "0A" or not listen_only):
                out.add(int(fields[9]))
    return out


def check_holds_nothing_of_the_broker(pid: int, broker: int, listening: set[int], allow_pipes: bool) -> None:
    """pid's descriptors above stdio: none is a farm listening socket, none is a socket or pipe the
    broker holds too (an inherited descriptor names the broker's own open file)."""
    ours = fd_targets(broker)
    broker_sockets = {inode(t, "socket") for t in ours.values()} - {0}
    broker_pipes = {inode(t, "pipe") for t in ours.values()} - {0}
    bad = []
    for fd, target in sorted(fd_targets(pid).items()):
        if fd <= 2:
            continue
        s = inode(target, "socket")
        if s and (s in listening or s in broker_sockets):
            bad.append((fd, target, "listening" if s in listening else "broker's socket"))
        p = inode(target, "pipe")
        if p and p in broker_pipes and not allow_pipes:
            bad.append((fd, target, "broker's pipe"))
    assert not bad, f"process {pid} ({proc_comm(pid)}) holds the broker's descriptors: {bad}"


@pytest.mark.parametrize("mode", [[], ["--no-zygote"]], ids=["zygote", "fresh"])
def test_workers_and_env_processes_hold_no_broker_descriptor(start_farm, mode):
    f = start_farm(workers=2, args=mode)
    sleeper = 0
    try:
        with f.connect() as farm:
            env = farm.make("gymfarm_test/Forker-v0")
            env.reset()
            sleeper = env._call("call", {"name": "spawn_sleeper", "args": [60]})["value"]
            assert pid_alive(sleeper)
            listening = tcp_sockets(farm_ports(f), listen_only=True)
            assert len(listening) >= 3, "the farm's native, HTTP and gymnasium listeners"
            children = f.worker_pids()
            comms = {p: proc_comm(p) for p in children}
            assert "gf-zygote" in comms.values() or mode == ["--no-zygote"]
            assert sum(1 for p in children if comms[p] != "gf-zygote") >= 2
            for p in children:
                check_holds_nothing_of_the_broker(p, f.pid, listening, allow_pipes=comms[p] == "gf-zygote")
                if comms[p] == "gf-zygote":  # beyond stdio, only its reply pipe to the broker
                    extra = {fd: t for fd, t in fd_targets(p).items() if fd > 2}
                    assert all(t.startswith("pipe:[") for t in extra.values()) and len(extra) <= 1, extra
            # what env code starts gets only what the worker had
            check_holds_nothing_of_the_broker(sleeper, f.pid, listening, allow_pipes=False)
            env.close()
    finally:
        if sleeper and pid_alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)


def test_broker_descriptors_are_close_on_exec(start_farm):
    """The broker's own sockets, pipes and files are close-on-exec (the gateway's HTTP sockets are
    the gateway's finding and left out here: TCP sockets on the HTTP ports)."""
    f = start_farm(workers=2)
    with f.connect() as farm:
        farm.make("CartPole-v1").close()
        http_ports = farm_ports(f) - {f.port}
        gateway = tcp_sockets(http_ports, listen_only=False)
        inheritable = []
        for fd, target in sorted(fd_targets(f.pid).items()):
            if fd <= 2 or inode(target, "socket") in gateway:
                continue
            try:
                flags = int(Path(f"/proc/{f.pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError):
                continue
            if not flags & O_CLOEXEC:
                inheritable.append((fd, target))
        assert not inheritable, f"broker descriptors without close-on-exec: {inheritable}"


def test_a_killed_farm_leaves_its_ports_free(start_farm):
    """kill -9 the broker while env code has a process of its own running, then start a farm on
    the same ports at once: it starts."""
    f = start_farm(workers=1)
    sleeper = 0
    try:
        with f.connect() as farm:
            env = farm.make("gymfarm_test/Forker-v0")
            env.reset()
            sleeper = env._call("call", {"name": "spawn_sleeper", "args": [60]})["value"]
        ports = {"--native-port": f.port, "--port": urlparse(f.rest_url).port,
                 "--gymnasium-http-port": urlparse(f.gymnasium_url).port}
        os.kill(f.pid, signal.SIGKILL)
        f.proc.wait(10)
        assert pid_alive(sleeper), "the env's own process outlives the farm"
        args = [x for kv in ports.items() for x in (kv[0], str(kv[1]))]
        again = start_farm(workers=1, args=args)
        assert again.port == ports["--native-port"]
        assert urlparse(again.rest_url).port == ports["--port"]
        with again.connect() as farm:
            farm.make("CartPole-v1").close()
    finally:
        if sleeper and pid_alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
