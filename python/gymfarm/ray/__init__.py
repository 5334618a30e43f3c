"""gymfarm on a Ray cluster: one farm on every alive Ray node, placed and restarted by Ray.

    import ray, gymfarm, gymfarm.ray
    ray.init(address="auto")
    cluster = gymfarm.ray.FarmCluster(workers_per_node=8)
    farm = gymfarm.connect(cluster)          # a ShardedFarm over the cluster's live farms
    venv = farm.make_vec("CartPole-v1", num_envs=64)
    ...
    cluster.shutdown()

Each farm runs in a :class:`FarmActor` with hard affinity to its node and unlimited restarts: a
farm whose process dies ends its actor, and Ray restarts the actor, which starts a new farm (a new
port). A monitor thread follows the cluster's nodes: a node that joins gets a farm, a node that
leaves is dropped. All farms share one random token, made here, given to the actors as an
argument (Ray's own channels; anyone who can reach the Ray cluster can run code as you anyway)
and written on each node to an owner-only file in an owner-only directory: it never appears on a
command line. The farms' native ports speak ZeroMQ CURVE (``curve=True``, the default): the
cluster makes one server keypair and one client keypair, hands each farm the server's secret key
(an owner-only file beside the token) and the client's public key as the only one it admits, and
gives clients ``client_curve`` (``gymfarm.connect(cluster)`` uses it), so neither the token nor
any step crosses the network in clear and a client without the key is refused. Needs the ``ray``
extra: ``pip install ./python[ray]``.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError("gymfarm.ray needs Ray: pip install './python[ray]' (or pip install ray)") from _e

from .._farmproc import find_gymfarm
from ._actor import FarmActor

__all__ = ["FarmCluster", "FarmActor", "find_gymfarm"]

log = logging.getLogger("gymfarm.ray")


class _Member:
    """A node's farm as the cluster sees it."""

    def __init__(self, node_id: str, host: str, actor: Any):
        self.node_id = node_id
        self.host = host
        self.actor = actor
        self.info: dict[str, Any] | None = None  # the farm's last answer; None while (re)starting
        self.pending: Any = None                 # an info() call in flight
        self.down_since: float | None = time.monotonic()  # when it last stopped answering
        self.failed = False  # its last info() call raised: the actor is dead or restarting


class FarmCluster:
    """One farm on every alive node of the Ray cluster (``ray.init`` first, or pass ``address``).

    ``workers_per_node``: each farm's ``--workers``. ``host_for_node(i, node)`` chooses the address a
    node's farm binds (``i`` counts nodes in the order they were seen, ``node`` is the entry of
    ``ray.nodes()``); default the node's own IP. ``farm_args`` are more ``gymfarm start`` flags,
    ``env`` more environment for the farm (``PYTHONPATH`` for your envs). ``poll_s`` is how often
    the nodes and farms are checked; a node's farm whose actor failed and that has not answered
    for ``retry_start_after`` seconds (default ``start_timeout`` + 30: its first start failed,
    which Ray does not retry) is started anew, and so is one still silent after
    ``start_timeout`` + 30 s, however it fails (a start that hangs). A farm still starting is
    left alone. The constructor returns once every node's farm is ready (or
    ``start_timeout`` passed). ``endpoints`` lists the live farms; ``shutdown()`` stops them all.

    ``token`` and ``curve`` (a dict of ``server_key``, ``server_secret``, ``public_key`` and
    ``secret_key``) reuse the credentials of an earlier cluster; ``curve=True`` makes new keys.
    ``name_prefix`` names each node's actor ``PREFIX + node_id`` in ``namespace``: a FarmCluster
    made again with the same prefix (``gymfarm cluster up``'s manager, restarted by Ray) adopts the
    farms whose actors still run instead of starting second ones; with ``detached=True`` the
    actors outlive the process that made them.
    """

    def __init__(self, workers_per_node: int = 4, *, address: str | None = None,
                 host_for_node: Callable[[int, dict[str, Any]], str] | None = None,
                 farm_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 gymfarm_bin: str | None = None, poll_s: float = 1.0, start_timeout: float = 120.0,
                 namespace: str | None = None, detached: bool = False, token: str | None = None,
                 retry_start_after: float | None = None, curve: bool | dict[str, str] = True,
                 name_prefix: str | None = None):
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        self.workers_per_node = int(workers_per_node)
        self.token = token or secrets.token_hex(16)  # 128 bits from the OS CSPRNG
        # CURVE: one server keypair for every farm, one client keypair for the cluster's clients
        self.client_curve: dict[str, str] | None = None
        self._farm_curve: dict[str, Any] | None = None
        if isinstance(curve, dict):  # the keys of an earlier FarmCluster (a restarted manager's)
            server_public, server_secret = curve["server_key"], curve["server_secret"]
            client_public, client_secret = curve["public_key"], curve["secret_key"]
        elif curve:
            import zmq

            if not zmq.has("curve"):
                raise RuntimeError("this pyzmq's libzmq has no CURVE; pass curve=False (not recommended)")
            server_public, server_secret = (k.decode() for k in zmq.curve_keypair())
            client_public, client_secret = (k.decode() for k in zmq.curve_keypair())
        if curve:
            self.client_curve = {"server_key": server_public, "public_key": client_public,
                                 "secret_key": client_secret}
            self._farm_curve = {"secret_key": server_secret, "clients": [client_public]}
        self._host_for_node = host_for_node
        self._farm_args = list(farm_args)
        self._env = dict(env or {})
        self._bin = gymfarm_bin or find_gymfarm()
        self._poll_s = poll_s
        self._start_timeout = start_timeout
        self._retry_after = start_timeout + 30.0 if retry_start_after is None else retry_start_after
        self._detached = detached
        self._name_prefix = name_prefix
        self._namespace = namespace or ray.get_runtime_context().namespace
        self._members: dict[str, _Member] = {}
        self._seen = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._closed = False
        self.sync()
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline and len(self.endpoints) < len(self._members):
            time.sleep(0.1)
            self.sync()
        self._thread = threading.Thread(target=self._monitor, name="gymfarm-cluster", daemon=True)
        self._thread.start()

    # -- membership -------------------------------------------------------------------------------

    def sync(self) -> None:
        """One round of the monitor: farms for new nodes, dropped for nodes gone, endpoints read."""
        with self._lock:
            if self._closed:
                return
            alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
            for node_id in list(self._members):
                if node_id not in alive:  # the node left: its farm went with it
                    m = self._members.pop(node_id)
                    log.info("gymfarm: node %s left; dropping its farm %s", node_id[:8], (m.info or {}).get("endpoint"))
                    try:
                        ray.kill(m.actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
            for node_id, node in alive.items():
                m = self._members.get(node_id)
                if m is not None and self._stuck(m):
                    # never answered since (its farm failed to start, so Ray does not restart it):
                    # a new actor, on the same address
                    log.warning("gymfarm: the farm on node %s has not started for %.0f s; starting it again",
                                node_id[:8], time.monotonic() - m.down_since)
                    try:
                        ray.kill(m.actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    self._await_name_free(node_id)
                    self._members[node_id] = self._start(node_id, node, m.host)
                elif m is None:
                    self._members[node_id] = self._start(node_id, node)
            self._read_infos()

    def _stuck(self, m: _Member) -> bool:
        """Whether a node's farm is to be started anew: down for ``retry_start_after`` once its
        actor failed, or for longer than any start may take, whatever it does."""
        if m.down_since is None:
            return False
        down = time.monotonic() - m.down_since
        return (m.failed and down > self._retry_after) or down > max(self._retry_after, self._start_timeout + 30.0)

    def _start(self, node_id: str, node: dict[str, Any], host: str | None = None) -> _Member:
        if host is None:
            i = self._seen
            self._seen += 1
            host = self._host_for_node(i, node) if self._host_for_node else str(node["NodeManagerAddress"])
        opts: dict[str, Any] = {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            "max_restarts": -1, "max_task_retries": 0, "num_cpus": 0,
        }
        if self._detached:
            opts["lifetime"] = "detached"
        if self._name_prefix:  # a named actor per node: a running one of that name is adopted, not doubled
            opts.update(name=f"{self._name_prefix}{node_id}", namespace=self._namespace, get_if_exists=True)
        actor = ray.remote(FarmActor).options(**opts).remote(
            host, self.workers_per_node, self.token, self._bin, self._farm_args, self._env, self._start_timeout,
            self._farm_curve)
        return _Member(node_id, host, actor)

    def _await_name_free(self, node_id: str, timeout: float = 10.0) -> None:
        """Waits (bounded) until a killed named actor has released its name, so that the next one
        of that name is a new actor, not the dying one."""
        if not self._name_prefix:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ray.get_actor(f"{self._name_prefix}{node_id}", namespace=self._namespace)
            except ValueError:
                return
            time.sleep(0.1)

    def _read_infos(self) -> None:
        for m in self._members.values():
            if m.pending is None:
                m.pending = m.actor.info.remote()
        pending = [m.pending for m in self._members.values()]
        if not pending:
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=min(0.5, self._poll_s))
        ready_set = set(ready)
        for m in self._members.values():
            if m.pending in ready_set:
                ref, m.pending = m.pending, None
                try:
                    m.info = ray.get(ref)
                    m.host = str(m.info.get("host") or m.host)  # an adopted farm's own address
                    m.down_since = None
                    m.failed = False
                except Exception as e:  # noqa: BLE001 - the actor died or is restarting
                    if m.info is not None:
                        log.info("gymfarm: the farm %s is down (%s); Ray restarts it", m.info.get("endpoint"),
                                 type(e).__name__)
                    m.failed = True
                    self._down(m)
            elif m.info is not None and not _pid_alive_here(m.info):
                self._down(m)  # its broker is gone (seen from this host); the actor restarts it

    @staticmethod
    def _down(m: _Member) -> None:
        m.info = None
        if m.down_since is None:
            m.down_since = time.monotonic()

    def _monitor(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep following the cluster
                log.exception("gymfarm: cluster monitor")

    # -- what clients use -------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """The native endpoints of the live farms, one per node."""
        with self._lock:
            return [m.info["endpoint"] for m in self._members.values() if m.info and m.info.get("endpoint")]

    def farms(self) -> list[dict[str, Any]]:
        """Each node's farm: ``node_id``, ``host``, ``endpoint`` (None while it starts), ``pid``."""
        with self._lock:
            return [{"node_id": m.node_id, "host": m.host, "endpoint": (m.info or {}).get("endpoint"),
                     "pid": (m.info or {}).get("pid"), "actor_pid": (m.info or {}).get("actor_pid"),
                     "restarted": (m.info or {}).get("restarted")} for m in self._members.values()]

    def wait_for(self, pred: Callable[[FarmCluster], bool], timeout: float = 60.0) -> bool:
        """Waits (bounded) until ``pred(self)`` holds, syncing as it goes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sync()
            if pred(self):
                return True
            time.sleep(0.1)
        return bool(pred(self))

    def connect(self, **kwargs: Any) -> Any:
        """A sharded client over the cluster's farms (``gymfarm.connect(cluster)``)."""
        from ..sharded import ShardedFarm

        return ShardedFarm(self, **kwargs)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stops every farm (SIGTERM, waited for) and its actor; nothing is left on any node."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            members = list(self._members.values())
            self._members.clear()
        refs = []
        for m in members:
            try:
                refs.append(m.actor.stop.remote(timeout))
            except Exception:  # noqa: BLE001
                pass
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout + 5)
        for m in members:
            try:
                ray.kill(m.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if getattr(self, "_thread", None) is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FarmCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<FarmCluster {len(self.endpoints)}/{len(self._members)} farms live>"


def _pid_alive_here(info: dict[str, Any]) -> bool:
    """On the farm's own host, whether its broker still runs (a quicker sign than the actor's
    restart); elsewhere, True (the actor's restart will tell)."""
    import ray as _ray

    try:
        here = info.get("node_id") == _ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        here = False
    if not here:
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
