"""One client over many farms: ``gymfarm.connect([endpoint, ...])`` or ``gymfarm.connect(cluster)``.

A :class:`ShardedFarm` holds one connection to each farm. ``make`` places each new env on the
least-loaded live farm (by the farms' own ``stats``: instances over warm workers); ``make_vec``
spreads the envs across the farms the same way and returns a :class:`ShardedVectorEnv`, which is
one :class:`gymfarm.RemoteVectorEnv` per farm (a *part*) stepped together: a vector step sends one
message to every farm before it waits for any reply, so the farms step in parallel.

Each farm is the unit of failure. Every connection has a ZeroMQ heartbeat, so a farm whose
process, node or network goes away is noticed within ``heartbeat`` seconds (at once when its
process dies on a reachable host): the requests to it raise :class:`gymfarm.errors.FarmLost`,
every other farm goes on, and new makes avoid the lost farm. A cluster's farms that Ray restarted
come back with new endpoints and are picked up on the next make.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from . import errors
from .client import Farm, curve_keys
from .env import RemoteEnv
from .vector import RemoteVectorEnv, reset_plan

_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)
DEFAULT_HEARTBEAT = 3.0


def read_cluster_file(path: str | os.PathLike) -> tuple[list[str], str | None]:
    """The endpoints and token of a cluster file (written by ``gymfarm cluster up`` or ``gymfarm
    nodes file``): JSON with ``endpoints`` and ``token_file``. The token file must be a regular
    file of this user's that nobody else may read."""
    _, eps, token = _cluster_file(path)
    return eps, token


def _cluster_file(path: str | os.PathLike) -> tuple[dict[str, Any], list[str], str | None]:
    """The cluster file's document, endpoints and token (read_cluster_file)."""
    doc = json.loads(Path(path).read_text())
    eps = doc.get("endpoints")
    if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
        raise ValueError(f"{path}: 'endpoints' must be a list of endpoint strings")
    token = None
    tf = doc.get("token_file")
    if tf:
        fd = os.open(tf, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise PermissionError(f"{tf}: the token file must be a regular file of this user, mode 0600")
            token = os.read(fd, 4096).decode().strip() or None
        finally:
            os.close(fd)
    return doc, list(eps), token


_MAX_LIVE = 4096  # endpoints taken from a cluster's manager or a farms directory, at most


def _is_farm_endpoint(e: Any) -> bool:
    """Whether a live endpoint from outside the cluster file (Ray, a farms directory) is one this
    client takes: a ``tcp://`` string of at most 256 characters."""
    return isinstance(e, str) and e.startswith("tcp://") and len(e) <= 256


def _reachable(address: str, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection (a quick test before Ray's own, slower one)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def manager_endpoints(doc: dict[str, Any], timeout: float = 5.0) -> list[str] | None:
    """The live endpoints of the cluster a cluster file names, from its manager actor
    (``manager`` in Ray namespace ``namespace`` of the cluster at ``ray_address``); None when Ray is
    not installed, the cluster does not answer, or this process is a driver of another Ray cluster.
    Only endpoints are taken from Ray (``tcp://`` strings, at most 4096): the token and keys are
    the file's own. The first call makes this process a Ray driver of that cluster."""
    address, ns, name = doc.get("ray_address"), doc.get("namespace"), doc.get("manager")
    if not all(isinstance(v, str) and v for v in (address, ns, name)):
        return None
    try:
        import ray
    except ImportError:
        return None
    try:
        if ray.is_initialized():
            if ray.get_runtime_context().gcs_address != address:
                return None
        elif not _reachable(address):
            return None
        else:
            ray.init(address=address, namespace=ns, log_to_driver=False, logging_level="warning")
        eps = ray.get(ray.get_actor(name, namespace=ns).endpoints.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - no cluster, no manager, a manager restarting: the file's list
        return None
    if not isinstance(eps, list) or len(eps) > _MAX_LIVE or not all(_is_farm_endpoint(e) for e in eps):
        return None
    return list(eps)


_MAX_FARM_FILE = 65536  # bytes of one farm's registration, at most


def farm_registrations(path: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """The farms registered in a farms directory (``gymfarm nodes run`` writes one ``NAME.json``
    per farm there: ``{"endpoint": "tcp://...", "host": ..., "pid": ..., "started": ...}``), in
    name order, each with its ``name``; None when the directory cannot be read. Only regular files
    of this user are read, at most 4096; a file that is not a JSON object or whose ``endpoint`` is
    not a ``tcp://`` string of at most 256 characters is skipped."""
    try:
        names = sorted(e.name for e in os.scandir(path) if e.name.endswith(".json") and not e.name.startswith("."))
    except OSError:
        return None
    out: list[dict[str, Any]] = []
    for name in names[:_MAX_LIVE]:
        try:
            fd = os.open(os.path.join(path, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, a symlink, not ours to read
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > _MAX_FARM_FILE:
                continue
            doc = json.loads(os.read(fd, _MAX_FARM_FILE))
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
        ep = doc.get("endpoint") if isinstance(doc, dict) else None
        if _is_farm_endpoint(ep):
            out.append(dict(doc, name=name[: -len(".json")]))
    return out


def farms_dir_endpoints(path: str | os.PathLike[str]) -> list[str] | None:
    """The endpoints of :func:`farm_registrations` (each once); None when the directory cannot be
    read."""
    regs = farm_registrations(path)
    return None if regs is None else list(dict.fromkeys(r["endpoint"] for r in regs))


def _resolve_curve(source: Any) -> dict[str, str] | None:
    """The CURVE keys a client needs for a cluster: a FarmCluster's ``client_curve``, or a cluster
    file's ``curve`` entry (its ``secret_key_file`` an owner-only file beside the token's); None for
    a list of endpoints or a cluster without CURVE."""
    if isinstance(source, (str, os.PathLike)):
        doc = json.loads(Path(source).read_text())
        return curve_keys(doc["curve"]) if doc.get("curve") else None
    if hasattr(source, "endpoints"):
        keys = getattr(source, "client_curve", None)
        return curve_keys(keys) if keys else None
    return None


def _resolve(source: Any) -> tuple[list[str], str | None]:
    """(endpoints, token) of a list of endpoints, a FarmCluster (anything with ``endpoints`` and
    ``token``) or a cluster file."""
    if isinstance(source, (str, os.PathLike)):
        doc, eps, token = _cluster_file(source)
        if doc.get("farms_dir"):  # gymfarm nodes: the farms register in a shared directory
            fd = doc["farms_dir"]
            live = farms_dir_endpoints(fd) if isinstance(fd, str) else None
        else:  # gymfarm cluster: the Ray cluster's manager knows them
            live = manager_endpoints(doc)
        return (eps if live is None else live), token
    if hasattr(source, "endpoints"):
        return list(source.endpoints), getattr(source, "token", None)
    eps = list(source)
    if not all(isinstance(e, str) for e in eps):
        raise TypeError("connect() takes an endpoint, a list of endpoints, a FarmCluster or a cluster file")
    return eps, None


class ShardedFarm:
    """Several farms as one: the :class:`gymfarm.Farm` API where it makes sense across farms.

    ``farms``: a list of endpoints, a :class:`gymfarm.ray.FarmCluster`, or a cluster file path
    (whose live endpoints come from the files in its ``farms_dir``, see
    :func:`farms_dir_endpoints`, or from the cluster's manager when its Ray cluster answers, see
    :func:`manager_endpoints`; else from the file's list). The list is re-read at most every
    ``refresh_s`` seconds, and on the next make after a farm was found lost.
    ``token`` (default: the cluster's, else ``GYMFARM_TOKEN``) is sent to every farm. ``curve``
    (default: the cluster's) are the CURVE keys of :class:`gymfarm.Farm`, used for every farm.
    ``heartbeat`` (seconds) bounds how long a silent farm goes unnoticed. ``timeout``,
    ``connect_timeout`` and ``local`` are as for :class:`gymfarm.Farm`.
    """

    def __init__(self, farms: Any, timeout: float = 60.0, connect_timeout: float = 10.0,
                 token: str | None = None, heartbeat: float = DEFAULT_HEARTBEAT, local: bool | None = None,
                 refresh_s: float = 1.0, curve: dict[str, str] | str | os.PathLike[str] | None = None):
        self._source = farms
        self.curve = curve_keys(curve) if curve is not None else _resolve_curve(farms)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.heartbeat = heartbeat
        self.local = local
        self.refresh_s = refresh_s
        self._token = token
        self.token: str | None = token
        self._farms: dict[str, Farm] = {}      # endpoint -> live connection
        self._retired: list[Farm] = []          # lost connections, kept for the envs that use them
        self._failed_at: dict[str, float] = {}  # endpoint -> when connecting to it last failed
        self._errors: dict[str, errors.GymfarmError] = {}  # endpoint -> why
        self._owner: dict[str, Farm] = {}  # instance id -> its farm, for instances made by call/call_many
        self._lock = threading.RLock()
        self._refreshed = 0.0
        self._closed = False
        self.refresh(force=True)
        if not self._farms:
            refused = [e for e in self._errors.values() if isinstance(e, errors.Unauthorized)]
            if refused:
                raise refused[0]
            raise errors.FarmUnavailable(f"none of the farms answers: {self._listed}")

    # -- membership -------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Re-reads the farm list (a cluster's live farms change as Ray restarts them and nodes come
        and go), connects to new farms and sets lost ones aside."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._refreshed < self.refresh_s:
                self._drop_lost()
                return
            self._refreshed = now
            eps, token = _resolve(self._source)
            self.token = self._token if self._token is not None else token
            self._listed = eps
            self._drop_lost()
            for ep in list(self._farms):
                if ep not in eps:  # left the cluster
                    self._retired.append(self._farms.pop(ep))
            for ep in eps:
                if ep in self._farms or now - self._failed_at.get(ep, -1e9) < self.refresh_s:
                    continue
                try:
                    self._farms[ep] = self._connect(ep)
                    self._failed_at.pop(ep, None)
                    self._errors.pop(ep, None)
                except errors.GymfarmError as e:
                    self._failed_at[ep] = now
                    self._errors[ep] = e

    def _connect(self, endpoint: str) -> Farm:
        return Farm(endpoint, timeout=self.timeout, connect_timeout=self.connect_timeout, token=self.token,
                    local=self.local, heartbeat=self.heartbeat, curve=self.curve)

    def _drop_lost(self) -> None:
        for ep, f in list(self._farms.items()):
            if farm_lost(f):
                self._retired.append(self._farms.pop(ep))
                self._failed_at[ep] = time.monotonic()
                self._refreshed = -1e9

    def mark_lost(self, endpoint: str) -> None:
        """A farm that some connection found lost: new makes avoid it."""
        with self._lock:
            f = self._farms.pop(endpoint, None)
            if f is not None:
                self._retired.append(f)
            self._failed_at[endpoint] = time.monotonic()
            self._refreshed = -1e9  # the next refresh asks the cluster at once: Ray may have restarted it

    @property
    def endpoints(self) -> list[str]:
        """The live farms this client uses."""
        self.refresh()
        return list(self._farms)

    @property
    def farms(self) -> list[Farm]:
        self.refresh()
        return list(self._farms.values())

    # -- placement --------------------------------------------------------------------------------

    def loads(self) -> list[tuple[Farm, dict[str, Any]]]:
        """Each live farm with its stats, asked of all farms at once; farms that fail to answer
        are left out (and set aside when lost)."""
        self.refresh()
        farms = list(self._farms.values())
        sent = []
        for f in farms:
            try:
                sent.append((f, f._send(f._frames("stats", "", None))))
            except errors.GymfarmError:
                self.mark_lost(f.endpoint) if farm_lost(f) else None
        out = []
        for f, rid in sent:
            try:
                out.append((f, Farm._result(f._wait([rid], min(self.timeout, 10.0))[rid])))
            except errors.GymfarmError:
                if farm_lost(f):
                    self.mark_lost(f.endpoint)
        return out

    def placement(self, num_envs: int) -> list[tuple[Farm, int]]:
        """How many of ``num_envs`` new envs go to each live farm: one at a time to the farm with
        the lowest load (instances, the ones placed here included, over warm workers)."""
        loads = self.loads()
        if not loads:
            raise errors.FarmUnavailable(f"no live farm among {self._listed}")
        have = [float(s.get("instances", 0)) for _f, s in loads]
        cap = [float(max(1, (s.get("pool") or {}).get("warm", len(s.get("workers") or [])) or 1)) for _f, s in loads]
        count = [0] * len(loads)
        for _ in range(num_envs):
            k = min(range(len(loads)), key=lambda j: ((have[j] + count[j]) / cap[j], j))
            count[k] += 1
        return [(loads[j][0], count[j]) for j in range(len(loads)) if count[j]]

    # -- the Farm API -----------------------------------------------------------------------------

    def make(self, env_id: str, **kwargs: Any) -> RemoteEnv:
        """One env on the least-loaded live farm (the next one if that farm fails or is full)."""
        last: Exception | None = None
        for f, _s in sorted(self.loads(), key=_load):  # least loaded first; the next if it fails
            try:
                return f.make(env_id, **kwargs)
            except (errors.FarmUnavailable, errors.CapacityExhausted, errors.Overloaded) as e:
                last = e
                if farm_lost(f):
                    self.mark_lost(f.endpoint)
        raise last if last is not None else errors.FarmUnavailable("no live farm")

    def make_vec(self, env_id: str, num_envs: int = 1, **kwargs: Any) -> ShardedVectorEnv:
        """``num_envs`` envs spread across the live farms as one vector env (see ShardedVectorEnv)."""
        kwargs.setdefault("timeout", self.timeout)
        return ShardedVectorEnv(self, env_id, num_envs=num_envs, **kwargs)

    # -- the request API of Farm, routed: what RemoteEnv and SB3's RemoteVecEnv build on -------------

    def call(self, verb: str, instance: str = "", body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """One request: a ``make`` goes to the least-loaded farm, a request for an instance to the
        farm that holds it; raises the typed error."""
        r = self.call_many([(verb, instance, body)], timeout)[0]
        if isinstance(r, errors.GymfarmError):
            raise r
        return r

    def call_many(self, requests: Sequence[tuple[str, str, dict[str, Any] | None]],
                  timeout: float | None = None) -> list[dict[str, Any] | errors.GymfarmError]:
        """As :meth:`gymfarm.Farm.call_many`, across farms: every request is sent (makes spread by
        load, the others to their instance's farm) before any reply is awaited."""
        makes = sum(1 for v, i, _b in requests if v == "make" and not i)
        placed: list[Farm] = [f for f, n in self.placement(makes) for _ in range(n)] if makes else []
        out: list[dict[str, Any] | errors.GymfarmError | None] = [None] * len(requests)
        groups: dict[int, tuple[Farm, list[int], list[int]]] = {}  # id(farm) -> (farm, indices, rids)
        for k, (verb, inst, body) in enumerate(requests):
            f = placed.pop() if verb == "make" and not inst else self._owner.get(inst) or self._any_farm()
            try:
                rid = f._send(f._frames(verb, inst, body))
            except errors.GymfarmError as e:
                out[k] = self._note_lost(f, e)
                continue
            g = groups.setdefault(id(f), (f, [], []))
            g[1].append(k)
            g[2].append(rid)
        for f, idx, rids in groups.values():
            try:
                replies = f._wait(rids, timeout)
            except errors.GymfarmError as e:
                for k in idx:
                    out[k] = self._note_lost(f, e)
                continue
            for k, rid in zip(idx, rids):
                try:
                    r = Farm._result(replies[rid])
                except errors.GymfarmError as e:
                    out[k] = e
                    continue
                verb, inst, _b = requests[k]
                if verb == "make" and isinstance(r.get("instance_id"), str):
                    self._owner[r["instance_id"]] = f
                elif verb == "close":
                    self._owner.pop(inst, None)
                out[k] = r
        return out  # type: ignore[return-value]

    def step_batch(self, steps: Sequence[tuple[str, Any]], timeout: float | None = None, **fields: Any
                   ) -> list[dict[str, Any] | errors.GymfarmError]:
        """As :meth:`gymfarm.Farm.step_batch`, across farms: one message per farm, all sent before
        any reply is awaited; the envs of a lost farm get :class:`FarmLost` entries."""
        out: list[dict[str, Any] | errors.GymfarmError | None] = [None] * len(steps)
        groups: dict[int, tuple[Farm, list[int]]] = {}
        for k, (inst, _a) in enumerate(steps):
            f = self._owner.get(inst) or self._any_farm()
            groups.setdefault(id(f), (f, []))[1].append(k)
        tickets = []
        for f, idx in groups.values():
            try:
                tickets.append((f, idx, f.send_step_batch([steps[k] for k in idx], **fields)))
            except errors.GymfarmError as e:
                for k in idx:
                    out[k] = self._note_lost(f, e)
        for f, idx, ticket in tickets:
            try:
                results = f.wait_step_batch(ticket, timeout)
            except errors.GymfarmError as e:
                results = [self._note_lost(f, e)] * len(idx)
            for k, r in zip(idx, results):
                out[k] = r
        return out  # type: ignore[return-value]

    def close_many(self, instance_ids: Sequence[str], timeout: float = 10.0) -> None:
        if instance_ids:
            self.call_many([("close", iid, None) for iid in instance_ids], timeout=timeout)

    def _any_farm(self) -> Farm:
        farms = self.farms
        if not farms:
            raise errors.FarmUnavailable(f"no live farm among {self._listed}")
        return farms[0]

    def _note_lost(self, f: Farm, e: errors.GymfarmError) -> errors.GymfarmError:
        if isinstance(e, errors.FarmUnavailable) or farm_lost(f):
            self.mark_lost(f.endpoint)
            if not isinstance(e, errors.FarmLost):
                e = errors.FarmLost(e.message, dict(e.details, endpoint=f.endpoint))
        return e

    def keep_only(self, farm: Farm) -> None:
        """Closes every connection but ``farm``'s (an env made here that owns its connection)."""
        with self._lock:
            for f in list(self._farms.values()) + self._retired:
                if f is not farm:
                    f.close()
            self._farms = {ep: f for ep, f in self._farms.items() if f is farm}
            self._retired = []

    def stats(self) -> dict[str, Any]:
        """The farms' stats totalled (``workers``, ``instances``, ``requests``) and each farm's in
        ``farms``: ``endpoint``, ``workers``, ``instances``, ``requests`` (what the farm served:
        through its broker and through its shared-memory slabs, docs/protocol.md "Shared memory")."""
        per = []
        for f, s in self.loads():
            served = int(s.get("requests", 0)) + int((s.get("shm") or {}).get("answered", 0))
            per.append({"endpoint": f.endpoint, "workers": len(s.get("workers") or []),
                        "instances": int(s.get("instances", 0)), "requests": served,
                        "pool": s.get("pool"), "pid": s.get("pid")})
        return {"workers": sum(p["workers"] for p in per), "instances": sum(p["instances"] for p in per),
                "requests": sum(p["requests"] for p in per), "farms": per}

    def list(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in self.farms:
            out.update(f.list())
        return out

    def envs(self) -> list[str]:
        return self.farms[0].envs()

    def ping(self) -> bool:
        return all(f.ping() for f in self.farms)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for f in list(self._farms.values()) + self._retired:
                f.close()
            self._farms.clear()
            self._retired.clear()

    def __enter__(self) -> ShardedFarm:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ShardedFarm over {len(self._farms)} farms>"


def _load(p: tuple[Farm, dict[str, Any]]) -> float:
    s = p[1]
    return float(s.get("instances", 0)) / float(max(1, (s.get("pool") or {}).get("warm", 1) or 1))


def farm_lost(f: Farm) -> bool:
    """Whether this connection's farm is known to be gone (heartbeat or local socket)."""
    if f.lost:
        return True
    with f._lock:
        try:
            f._check_lost()
        except errors.FarmLost:
            return True
    return f.lost


class _Part:
    """The envs of one vector env that live on one farm: a RemoteVectorEnv and the global rows."""

    def __init__(self, venv: RemoteVectorEnv, rows: list[int]):
        self.venv = venv
        self.rows = rows
        self.index = np.asarray(rows, dtype=np.int64)
        self.lost: errors.FarmLost | None = None
        self.sent = False

    @property
    def endpoint(self) -> str:
        return self.venv.farm.endpoint


class ShardedVectorEnv(VectorEnv):
    """``num_envs`` copies of one env spread over several farms, as one VectorEnv.

    Behaves as :class:`gymfarm.RemoteVectorEnv` (and so as SyncVectorEnv) step for step, in every
    autoreset mode, with ``send``/``recv`` and ``step_async``/``step_wait``. A step sends every
    farm its envs' actions (one message per farm) before it waits for any reply.

    A farm that is lost: with ``on_crash="raise"`` (default) the step raises
    :class:`gymfarm.errors.FarmLost` naming the first of its envs (``env_index``, ``details["rows"]``
    all of them) once every other farm's envs have stepped; ``results`` holds each env's outcome.
    Later steps step the other farms' envs and raise it again. With ``on_crash="reset"`` the lost
    envs are made again on the surviving farms and reset; their row holds the reset obs, reward 0,
    ``truncated=True`` and ``crashed``/``crash`` in the infos, as for a crashed worker.
    """

    def __init__(self, sharded: ShardedFarm, env_id: str, num_envs: int = 1,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, timeout: float = 60.0,
                 copy: bool = True, on_crash: str = "raise", owns_farm: bool = False, **make_kwargs: Any):
        if num_envs < 1:
            raise ValueError("num_envs must be at least 1")
        if on_crash not in ("raise", "reset"):
            raise ValueError("on_crash must be 'raise' or 'reset'")
        self.sharded = sharded
        self.env_id = env_id
        self.num_envs = num_envs
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.timeout = timeout
        self.copy = copy
        self.on_crash = on_crash
        self.owns_farm = owns_farm  # close ``sharded`` with this env (gymnasium.make_vec)
        self._make_kwargs = dict(make_kwargs)
        self._parts: list[_Part] = []
        self._closed_remote = False
        try:
            self._parts = self._make_parts(list(range(num_envs)))
        except BaseException:
            self.close_extras()
            raise
        first = self._parts[0].venv
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = first.render_mode
        self.metadata = dict(first.metadata)
        self._array_obs = isinstance(self.single_observation_space, _ARRAY_SPACES)
        self._array_act = isinstance(self.single_action_space, _ARRAY_SPACES)
        self._observations = create_empty_array(self.single_observation_space, n=num_envs, fn=np.zeros)
        self._env_obs: list[Any] = [None] * num_envs  # rows of a non-array obs space
        self._batch_spaces: dict[int, spaces.Space] = {}
        self._rewards = np.zeros((num_envs,), dtype=np.float64)
        self._terminations = np.zeros((num_envs,), dtype=np.bool_)
        self._truncations = np.zeros((num_envs,), dtype=np.bool_)
        self._stepping = False

    def _make_parts(self, rows: list[int]) -> list[_Part]:
        """Makes envs for ``rows`` on the live farms, spread by load."""
        parts: list[_Part] = []
        at = 0
        try:
            for f, n in self.sharded.placement(len(rows)):
                venv = RemoteVectorEnv(f.endpoint, self.env_id, num_envs=n, autoreset_mode=self.autoreset_mode,
                                       timeout=self.timeout, copy=False, token=self.sharded.token,
                                       on_crash=self.on_crash,
                                       farm_options={"heartbeat": self.sharded.heartbeat, "local": self.sharded.local,
                                                     "curve": self.sharded.curve},
                                       **self._make_kwargs)
                parts.append(_Part(venv, rows[at:at + n]))
                at += n
        except BaseException:
            for p in parts:
                p.venv.close()
            raise
        return parts

    # -- where the envs are -----------------------------------------------------------------------

    @property
    def instance_ids(self) -> list[str]:
        out = [""] * self.num_envs
        for p in self._parts:
            for r, iid in zip(p.rows, p.venv.instance_ids):
                out[r] = iid
        return out

    @property
    def endpoints(self) -> list[str]:
        """The farm of each sub-env."""
        out = [""] * self.num_envs
        for p in self._parts:
            for r in p.rows:
                out[r] = p.endpoint
        return out

    def _lost_error(self, part: _Part) -> errors.FarmLost:
        assert part.lost is not None
        e = errors.FarmLost(f"sub-env {part.rows[0]}: {part.lost.message}",
                            dict(part.lost.details, rows=list(part.rows), env_index=part.rows[0]))
        e.env_index = part.rows[0]  # type: ignore[attr-defined]
        return e

    def _lose(self, part: _Part, err: errors.FarmUnavailable) -> None:
        part.lost = err if isinstance(err, errors.FarmLost) else errors.FarmLost(err.message, dict(err.details))
        part.lost.details.setdefault("endpoint", part.endpoint)
        self.sharded.mark_lost(part.endpoint)

    def _global_error(self, part: _Part, e: errors.GymfarmError) -> errors.GymfarmError:
        """A part's error with its env index as this vector env's."""
        local = getattr(e, "env_index", None)
        if isinstance(local, int) and 0 <= local < len(part.rows):
            g = part.rows[local]
            e.env_index = g  # type: ignore[attr-defined]
            e.details["env_index"] = g
            e.message = f"sub-env {g} on {part.endpoint}: " + e.message.split(": ", 1)[-1]
            e.args = (e.message,)
        return e

    # -- the VectorEnv API ----------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        seeds, options, mask = reset_plan(self.num_envs, seed, options)
        if self.on_crash == "reset":
            self._remake_lost()
        infos: dict[str, Any] = {}
        first_error: errors.GymfarmError | None = None
        for p in self._parts:
            pmask = mask[p.index]
            if not pmask.any():
                continue
            if p.lost is not None:
                first_error = first_error or self._lost_error(p)
                continue
            popts = dict(options) if options is not None else None
            if not pmask.all():
                popts = dict(popts or {}, reset_mask=pmask)
            try:
                obs, info = p.venv.reset(seed=[seeds[r] for r in p.rows], options=popts)
            except errors.FarmUnavailable as e:
                self._lose(p, e)
                first_error = first_error or self._lost_error(p)
                continue
            except errors.GymfarmError as e:
                first_error = first_error or self._global_error(p, e)
                continue
            self._put_obs(p, obs, pmask)
            infos = _merge_info(infos, info, p.index, self.num_envs)
        self._terminations[mask] = False
        self._truncations[mask] = False
        if first_error is not None:
            raise first_error
        return self._batched_obs(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Sends every farm its envs' actions (one message each) and returns at once."""
        if self._stepping:
            raise RuntimeError("step_async called twice without step_wait")
        if self._array_act:
            acts = np.asarray(actions)
            if acts.shape[:1] != (self.num_envs,):
                raise ValueError(f"got a batch of {len(acts) if acts.ndim else 0} actions for "
                                 f"num_envs={self.num_envs}")
            batches = [acts[p.index] for p in self._parts]
        else:
            per_env = list(iterate(self.action_space, actions))
            if len(per_env) != self.num_envs:
                raise ValueError(f"got a batch of {len(per_env)} actions for num_envs={self.num_envs}")
            batches = [concatenate(self.single_action_space, [per_env[r] for r in p.rows],
                                   create_empty_array(self.single_action_space, n=len(p.rows), fn=np.zeros))
                       for p in self._parts]
        if self.autoreset_mode == AutoresetMode.DISABLED:
            done = sorted(r for p in self._parts if p.lost is None
                          for r, d in zip(p.rows, p.venv._autoreset_envs) if d)
            if done:
                raise AssertionError(f"autoreset is disabled and sub-envs {done} ended an episode: reset them "
                                     "with reset(options={'reset_mask': ...}) before stepping")
        for p, batch in zip(self._parts, batches):
            p.sent = False
            if p.lost is not None:
                continue
            try:
                p.venv.step_async(batch)
                p.sent = True
            except errors.FarmUnavailable as e:
                self._lose(p, e)
        self._stepping = True

    def step_wait(self, timeout: float | None = None
                  ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._stepping:
            raise RuntimeError("step_wait called without step_async")
        self._stepping = False
        infos: dict[str, Any] = {}
        failed: dict[int, errors.GymfarmError] = {}  # first row of a failing part -> its error
        for p in self._parts:
            if not p.sent:
                continue
            p.sent = False
            try:
                obs, rew, term, trunc, info = p.venv.step_wait(timeout)
            except errors.FarmUnavailable as e:
                self._lose(p, e)
                continue
            except errors.GymfarmError as e:
                self._absorb_partial(p)
                e = self._global_error(p, e)
                failed[getattr(e, "env_index", p.rows[0])] = e
                continue
            self._put_obs(p, obs)
            self._rewards[p.index] = rew
            self._terminations[p.index] = term
            self._truncations[p.index] = trunc
            infos = _merge_info(infos, info, p.index, self.num_envs)
        lost = [p for p in self._parts if p.lost is not None]
        if lost and self.on_crash == "reset":
            infos = self._replace_lost(lost, infos)
            lost = [p for p in self._parts if p.lost is not None]
        for p in lost:
            failed.setdefault(p.rows[0], self._lost_error(p))
        if failed:
            first = failed[min(failed)]
            first.results = [failed.get(r) or {  # type: ignore[attr-defined]
                "obs": self._env_obs_row(r), "reward": float(self._rewards[r]),
                "terminated": bool(self._terminations[r]), "truncated": bool(self._truncations[r])}
                for r in range(self.num_envs)]
            for p in lost:
                for r in p.rows:
                    first.results[r] = self._lost_error(p)  # type: ignore[attr-defined]
            raise first
        return (self._batched_obs(), np.copy(self._rewards), np.copy(self._terminations),
                np.copy(self._truncations), infos)

    def _absorb_partial(self, p: _Part) -> None:
        """After a part's step raised for some of its envs: the others' rows as the part has them."""
        v = p.venv
        for k, r in enumerate(p.rows):
            if v._env_obs[k] is not None:
                if self._array_obs:
                    self._observations[r] = v._env_obs[k]
                else:
                    self._env_obs[r] = v._env_obs[k]
        self._rewards[p.index] = v._rewards
        self._terminations[p.index] = v._terminations
        self._truncations[p.index] = v._truncations

    # -- on_crash="reset" for a lost farm -------------------------------------------------------

    def _remake_lost(self) -> list[tuple[_Part, errors.FarmLost]]:
        """Every lost part's envs made again on the surviving farms (new parts); returns them,
        each with the error that lost the envs."""
        made: list[tuple[_Part, errors.FarmLost]] = []
        for p in [p for p in self._parts if p.lost is not None]:
            try:
                new = self._make_parts(p.rows)
            except errors.GymfarmError:
                continue  # no farm can take them now: they stay lost
            self._parts.remove(p)
            p.venv.close()
            self._parts.extend(new)
            made.extend((q, p.lost) for q in new)
        return made

    def _replace_lost(self, lost: list[_Part], infos: dict[str, Any]) -> dict[str, Any]:
        for q, err in self._remake_lost():
            try:
                obs, info = q.venv.reset()
            except errors.FarmUnavailable as e:
                self._lose(q, e)
                continue
            self._put_obs(q, obs)
            self._rewards[q.index] = 0.0
            self._terminations[q.index] = False
            self._truncations[q.index] = True
            crash = {"code": err.code, "message": err.message, "details": dict(err.details)}
            for k, r in enumerate(q.rows):
                row = _unbatch_info(info, k)
                row["crashed"] = True
                row["crash"] = crash
                infos = self._add_info(infos, row, r)
        return infos

    # -- EnvPool-style asynchronous stepping ---------------------------------------------------

    def send(self, actions: Any, env_ids: Sequence[int] | None = None) -> None:
        """Sends one step per env in ``env_ids`` (default all) without waiting."""
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in env_ids]
        acts = list(actions)
        if len(acts) != len(ids):
            raise ValueError(f"got {len(acts)} actions for {len(ids)} envs")
        where = self._where()
        groups: dict[int, tuple[list[Any], list[int]]] = {}
        for i, a in zip(ids, acts):
            k, local = where[i]
            if self._parts[k].lost is not None:
                raise self._lost_error(self._parts[k])
            g = groups.setdefault(k, ([], []))
            g[0].append(a)
            g[1].append(local)
        for k, (a, local) in groups.items():
            try:
                self._parts[k].venv.send(a, local)
            except errors.FarmUnavailable as e:
                self._lose(self._parts[k], e)
                raise self._lost_error(self._parts[k]) from None

    def recv(self, min_envs: int = 1, timeout: float | None = None
             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], np.ndarray]:
        """Waits for at least ``min_envs`` in-flight steps on any farms and returns every one
        finished so far: ``(obs, rewards, terminations, truncations, infos, env_ids)``."""
        busy = [p for p in self._parts if p.venv._sent]
        if not busy:
            raise RuntimeError("recv called with no step in flight")
        need = min(min_envs, sum(len(p.venv._sent) for p in busy))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            ready = []
            for p in busy:
                try:
                    ready.append(p.venv.farm._ready(list(p.venv._sent)))
                except errors.FarmUnavailable as e:
                    p.venv._sent.clear()
                    self._lose(p, e)
                    raise self._lost_error(p) from None
            if sum(ready) >= need:
                break
            if time.monotonic() > deadline:
                raise errors.Timeout(f"no {need} replies from the farms within the timeout", {"client_side": True})
            time.sleep(0.0001)
        obs, rew, term, trunc, ids, infos = [], [], [], [], [], {}
        got = 0
        for p, n in zip(busy, ready):
            if n == 0:
                continue
            o, r, te, tr, info, local = p.venv.recv(min_envs=n, timeout=timeout)
            rows = p.index[local]
            infos = _merge_info(infos, info, np.arange(got, got + len(rows)), None)
            got += len(rows)
            obs.extend(iterate(self._batch_space(len(rows)), o))
            rew.append(r)
            term.append(te)
            trunc.append(tr)
            ids.append(rows)
        infos = _fix_sizes(infos, got)
        batch = create_empty_array(self.single_observation_space, n=got, fn=np.zeros)
        return (concatenate(self.single_observation_space, obs, batch), np.concatenate(rew),
                np.concatenate(term), np.concatenate(trunc), infos, np.concatenate(ids).astype(np.int64))

    def _where(self) -> dict[int, tuple[int, int]]:
        return {r: (k, j) for k, p in enumerate(self._parts) for j, r in enumerate(p.rows)}

    # -- the rest of the VectorEnv API: one request per env, all farms pipelined ----------------

    def _per_env(self, fn: Any) -> tuple[Any, ...]:
        out: list[Any] = [None] * self.num_envs
        for p in self._parts:
            if p.lost is not None:
                raise self._lost_error(p)
            try:
                vals = fn(p)
            except errors.FarmUnavailable as e:
                self._lose(p, e)
                raise self._lost_error(p) from None
            except errors.GymfarmError as e:
                raise self._global_error(p, e) from None
            for r, v in zip(p.rows, vals):
                out[r] = v
        return tuple(out)

    def render(self) -> tuple[Any, ...] | None:
        return self._per_env(lambda p: p.venv.render())

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return self._per_env(lambda p: p.venv.call(name, *args, **kwargs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self._per_env(lambda p: p.venv.get_attr(name))

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values must have length num_envs={self.num_envs}, got {len(values)}")
        self._per_env(lambda p: [p.venv.set_attr(name, [values[r] for r in p.rows])] * len(p.rows))

    def close_extras(self, **kwargs: Any) -> None:
        if not self._closed_remote:
            self._closed_remote = True
            for p in self._parts:
                p.venv.close()
            if self.owns_farm:
                self.sharded.close()

    # -- helpers -------------------------------------------------------------------------------

    def _batch_space(self, n: int) -> spaces.Space:
        """The batched observation space of ``n`` envs (cached: building a Box is not cheap)."""
        sp = self._batch_spaces.get(n)
        if sp is None:
            sp = self._batch_spaces[n] = batch_space(self.single_observation_space, n)
        return sp

    def _put_obs(self, p: _Part, obs: Any, mask: np.ndarray | None = None) -> None:
        """A part's batched obs into this env's rows (only the masked ones, for a masked reset)."""
        if self._array_obs:
            if mask is None:
                self._observations[p.index] = obs
            else:
                self._observations[p.index[mask]] = np.asarray(obs)[mask]
            return
        items = list(iterate(self._batch_space(len(p.rows)), obs))
        for k, (r, o) in enumerate(zip(p.rows, items)):
            if mask is None or mask[k]:
                self._env_obs[r] = o

    def _env_obs_row(self, r: int) -> Any:
        return self._observations[r].copy() if self._array_obs else self._env_obs[r]

    def _batched_obs(self) -> Any:
        if not self._array_obs:
            self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        if not self.copy:
            return self._observations
        return self._observations.copy() if self._array_obs else deepcopy(self._observations)

    def __repr__(self) -> str:
        return f"<ShardedVectorEnv {self.env_id} x{self.num_envs} over {len(self._parts)} farms>"


def _merge_info(out: dict[str, Any], info: dict[str, Any], rows: np.ndarray, n: int | None) -> dict[str, Any]:
    """Adds a part's batched infos (Gymnasium's ``{key: array, _key: mask}``, nested for dicts) to
    ``out`` at ``rows``; ``n`` is the batch size of ``out`` (None: grown as rows come)."""
    for key, value in info.items():
        if key.startswith("_") and key[1:] in info:
            continue
        mask = info.get(f"_{key}")
        size = n if n is not None else int(rows.max()) + 1
        if isinstance(value, dict):
            out[key] = _merge_info(out.get(key, {}), value, rows, n)
        else:
            arr = out.get(key)
            value = np.asarray(value) if not isinstance(value, np.ndarray) else value
            if arr is None:
                if value.dtype == object:
                    arr = np.full(size, None, dtype=object)
                else:
                    arr = np.zeros((size, *value.shape[1:]), dtype=value.dtype)
            elif len(arr) < size:
                arr = _grow(arr, size)
            arr[rows] = value
            out[key] = arr
        m = out.get(f"_{key}")
        if m is None:
            m = np.zeros(size, dtype=np.bool_)
        elif len(m) < size:
            m = _grow(m, size)
        m[rows] = mask if mask is not None else True
        out[f"_{key}"] = m
    return out


def _grow(arr: np.ndarray, size: int) -> np.ndarray:
    out = np.full(size, None, dtype=object) if arr.dtype == object else np.zeros((size, *arr.shape[1:]), arr.dtype)
    out[:len(arr)] = arr
    return out


def _fix_sizes(info: dict[str, Any], n: int) -> dict[str, Any]:
    """Pads every array of a merged info to ``n`` rows (keys that only the first envs had)."""
    for k, v in info.items():
        if isinstance(v, dict):
            _fix_sizes(v, n)
        elif isinstance(v, np.ndarray) and len(v) < n:
            info[k] = _grow(v, n)
    return info


def _unbatch_info(info: dict[str, Any], k: int) -> dict[str, Any]:
    """Env ``k``'s own info out of a batched one."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") and key[1:] in info:
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[k]:
            continue
        if isinstance(value, dict):
            out[key] = _unbatch_info(value, k)
        else:
            v = value[k]
            out[key] = bool(v) if isinstance(v, np.bool_) else v
    return out
