"""Finding: the gateway's sockets leaked into env code: the zygote and every worker held the
gateway's listening sockets, because they were not close-on-exec. Every socket the gateway opens,
its listeners and the connections it accepts, must carry O_CLOEXEC."""
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

O_CLOEXEC = 0o2000000


def tcp_inodes(pid, ports):
    """Inodes of the process's TCP sockets (v4 and v6) whose local port is one of `ports`."""
    out = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port in ports:
                out.add(fields[9])
    return out


def socket_fds(pid, inodes):
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            fds[int(fd)] = target
    return fds


def fd_flags(pid, fd):
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags in fdinfo")


def test_gateway_sockets_are_close_on_exec(start_farm):
    farm = start_farm(workers=1)
    ports = {urlparse(farm.rest_url).port, urlparse(farm.gymnasium_url).port}
    clients = [socket.create_connection(("127.0.0.1", p), timeout=5) for p in ports]
    try:
        for c in clients:  # the farm has accepted them once it answers
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert c.recv(4096).startswith(b"HTTP/1.1")
        fds = socket_fds(farm.pid, tcp_inodes(farm.pid, ports))
        assert len(fds) >= 4, f"expected two listeners and two accepted sockets, found {fds}"
        leaky = {fd: t for fd, t in fds.items() if not fd_flags(farm.pid, fd) & O_CLOEXEC}
        assert not leaky, f"gateway sockets without close-on-exec: {leaky}"
        for w in farm.worker_pids():  # and so no worker (or the zygote) holds one
            assert not socket_fds(w, tcp_inodes(farm.pid, ports)), f"process {w} holds a gateway socket"
    finally:
        for c in clients:
            c.close()
