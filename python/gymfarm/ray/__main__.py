"""``gymfarm cluster up|status|down`` (the C++ CLI hands ``gymfarm cluster ...`` to
``python -m gymfarm.ray ...``).

    gymfarm cluster up --address RAY_ADDRESS --workers-per-node N [--file gymfarm-cluster.json]
    gymfarm cluster status [--file ...]
    gymfarm cluster down [--file ...]

``up`` starts a detached manager actor (``gymfarm-cluster`` in Ray namespace ``gymfarm``; Ray
restarts it if it dies, and the restarted one adopts the running farms) that runs a FarmCluster,
waits for the farms, and writes the cluster file: JSON with the endpoints, the Ray address
(``ray_address``, the GCS address), ``namespace`` and ``manager`` (where a client asks for the
live endpoints) and ``token_file``, the path of an owner-only (0600) file beside it that holds the
token, and ``curve``: the farms' CURVE server key, the client's public key and ``secret_key_file``,
another owner-only file beside it that holds the client's secret key. ``gymfarm.connect(PATH)``
reads it. ``status`` prints the farms and rewrites the file with
the current endpoints; ``down`` stops every farm and the manager and removes both files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .._farmproc import write_private
from ._manager import MANAGER, NAMESPACE, ClusterManager


def _write_private(path: Path, text: str) -> None:
    """Writes ``path`` mode 0600, never through a symlink; replaces only a regular file of ours."""
    try:
        write_private(path, text)
    except PermissionError as e:
        raise SystemExit(f"gymfarm cluster: {e}") from None


def _token_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.token")


def _curve_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.curve")


def _connect(address: str | None) -> Any:
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False)
    return ray


def _manager(ray: Any) -> Any:
    try:
        return ray.get_actor(MANAGER, namespace=NAMESPACE)
    except ValueError:
        raise SystemExit("gymfarm cluster: no cluster is up (gymfarm cluster up ...)") from None


def _write_file(path: Path, endpoints: list[str], address: str | None, curve: dict[str, str] | None) -> None:
    doc = {"endpoints": endpoints, "token_file": str(_token_file(path).resolve()), "ray_address": address,
           "namespace": NAMESPACE, "manager": MANAGER, "written": time.time()}
    if curve:
        doc["curve"] = curve
    _write_private(path, json.dumps(doc, indent=2) + "\n")


def cmd_up(a: argparse.Namespace) -> int:
    ray = _connect(a.address)
    try:
        ray.get_actor(MANAGER, namespace=NAMESPACE)
        raise SystemExit("gymfarm cluster: a cluster is already up (gymfarm cluster down first)")
    except ValueError:
        pass
    from . import find_gymfarm

    farm_args: list[str] = []
    for m in a.imports:
        farm_args += ["--import", m]
    env = dict(kv.split("=", 1) for kv in a.env)
    # the credentials are made here and given to the manager as arguments: a manager that Ray
    # restarts gets them again (and adopts the running farms, which hold the same ones)
    import secrets

    import zmq

    server_public, server_secret = (k.decode() for k in zmq.curve_keypair())
    client_public, client_secret = (k.decode() for k in zmq.curve_keypair())
    kwargs = {"workers_per_node": a.workers_per_node, "farm_args": farm_args + a.farm_arg, "env": env,
              "gymfarm_bin": a.gymfarm_bin or find_gymfarm(), "start_timeout": a.timeout,
              "token": secrets.token_hex(16),
              "curve": {"server_key": server_public, "server_secret": server_secret, "public_key": client_public,
                        "secret_key": client_secret}}
    mgr = ray.remote(ClusterManager).options(name=MANAGER, namespace=NAMESPACE, lifetime="detached",
                                             num_cpus=0, max_restarts=-1,
                                             max_task_retries=-1).remote(kwargs, a.first_host)
    try:  # the GCS address, also for --address auto (a client asks it for the live endpoints)
        address = ray.get_runtime_context().gcs_address or a.address
    except Exception:  # noqa: BLE001 - a ray:// client connection has none
        address = a.address
    endpoints = ray.get(mgr.endpoints.remote(), timeout=a.timeout + 30)
    path = Path(a.file)
    _write_private(_token_file(path), ray.get(mgr.token.remote()))
    keys = ray.get(mgr.curve.remote())
    curve = None
    if keys:
        _write_private(_curve_file(path), keys["secret_key"] + "\n")
        curve = {"server_key": keys["server_key"], "public_key": keys["public_key"],
                 "secret_key_file": str(_curve_file(path).resolve())}
    _write_file(path, endpoints, address, curve)
    print(f"gymfarm cluster: {len(endpoints)} farms up; connect with gymfarm.connect({str(path)!r})")
    for ep in endpoints:
        print(f"  {ep}")
    print(f"  token: {_token_file(path).resolve()} (owner-only)")
    if curve:
        print(f"  curve: server key {curve['server_key']}; client secret key {curve['secret_key_file']} (owner-only)")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    ray = _connect(a.address)
    mgr = _manager(ray)
    farms = ray.get(mgr.farms.remote(), timeout=60)
    live = [f["endpoint"] for f in farms if f["endpoint"]]
    print(f"gymfarm cluster: {len(live)}/{len(farms)} farms live")
    print(f"  {'node':10} {'host':16} {'endpoint':28} {'pid':>8} restarted")
    for f in farms:
        print(f"  {f['node_id'][:8]:10} {f['host']:16} {f['endpoint'] or '(starting)':28} {f['pid'] or '-':>8} "
              f"{'yes' if f['restarted'] else 'no'}")
    path = Path(a.file)
    if path.exists():
        doc = json.loads(path.read_text())
        _write_file(path, live, doc.get("ray_address"), doc.get("curve"))
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    ray = _connect(a.address)
    mgr = _manager(ray)
    ray.get(mgr.shutdown.remote(), timeout=120)
    ray.kill(mgr, no_restart=True)
    path = Path(a.file)
    for p in (path, _token_file(path), _curve_file(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    print("gymfarm cluster: down")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gymfarm cluster", description="gymfarm farms on a Ray cluster")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("up", "status", "down"):
        p = sub.add_parser(name)
        p.add_argument("--address", default=None, help="the Ray cluster (default: auto)")
        p.add_argument("--file", default="gymfarm-cluster.json", help="the cluster file (default: %(default)s)")
        if name == "up":
            p.add_argument("--workers-per-node", type=int, default=4)
            p.add_argument("--import", dest="imports", action="append", default=[], help="gymfarm start --import")
            p.add_argument("--farm-arg", action="append", default=[], help="one more gymfarm start argument")
            p.add_argument("--env", action="append", default=[], help="KEY=VALUE in every farm's environment")
            p.add_argument("--gymfarm-bin", default=None, help="the gymfarm binary on every node")
            p.add_argument("--first-host", default=None,
                           help="one-box test clusters: node i binds this address plus i (127.0.0.2, ...)")
            p.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    return {"up": cmd_up, "status": cmd_status, "down": cmd_down}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
