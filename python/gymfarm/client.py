"""The native client: a ZeroMQ DEALER socket speaking docs/protocol.md, or the farm's local unix
socket when the farm runs on this host."""
from __future__ import annotations

import builtins
import itertools
import os
import struct
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq

from . import codec, errors, slab
from .local import LinkClosed, LocalLink

if TYPE_CHECKING:  # imported where used: env and vector import this module
    from .env import RemoteEnv
    from .vector import RemoteVectorEnv

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_SLAB_SPIN_US = 1000.0  # default busy-poll on a slab: only the worker and the client take cores
_LINK_SPIN_US = 200.0  # on the local socket, where the broker needs a core as well


class Farm:
    """A connection to a gymfarm broker.

    >>> farm = Farm("tcp://127.0.0.1:5555")
    >>> env = farm.make("CartPole-v1")

    Calls are synchronous and thread-safe (one lock per connection). ``timeout`` (seconds) bounds
    every call; past it :class:`gymfarm.Timeout` is raised. ``token`` (default: the environment
    variable ``GYMFARM_TOKEN``) is sent in the hello to farms that need one.

    On the farm's own host (``tcp://127.0.0.1``, ``localhost``, ``[::1]`` or ``ipc://``) the
    connection moves to the farm's local unix socket after the hello (``local=False`` or the
    environment variable ``GYMFARM_LOCAL=0`` keeps ZeroMQ): the same messages with fewer
    wake-ups, several times faster per step on virtual machines. ``is_local`` says which is used.
    There, a call busy-polls for its reply for up to ``spin_us`` microseconds before it sleeps,
    while replies keep coming that fast (0: never). By default that is 1000 us on an instance's
    shared-memory slab, where only the worker and this client take cores (a sleeping client's
    wake-up costs tens of microseconds, a quarter of a Pong step here), and 200 us on the local
    socket, where the broker needs a core too; a vector env with more envs than cores spins at
    most 200 us on each slab.

    Instances belong to the connection that made them: other connections cannot see or use them,
    and on the local socket they are closed when the connection ends (the script exits, crashes
    or calls :meth:`close`), unless ``keep_instances=True``.

    ``name`` (default ``"gymfarm-python"``) is how this connection's session is shown by the
    farm's ``stats``, ``gymfarm status`` and dashboard, beside the number the farm gives it.

    ``heartbeat`` (seconds, default off) makes the connection notice a farm that went away without
    a word (its host or node died, the network dropped): ZeroMQ pings the farm every third of it
    and drops the connection when nothing came back within it; every request in flight then, or
    waiting when the farm's local socket breaks, raises :class:`gymfarm.errors.FarmLost` at once
    instead of waiting for ``timeout``. The sharded client (:mod:`gymfarm.sharded`) turns it on.

    A farm started with ``--curve-secret-file`` speaks ZeroMQ CURVE on its native port: pass its
    public key (``curve_server_key``) and this client's keypair (``curve_public_key``,
    ``curve_secret_key``), all z85, or one ``curve=`` dict with the keys ``server_key``,
    ``public_key`` and ``secret_key`` (``secret_key_file`` instead of ``secret_key``: an owner-only
    file holding it), or the path of a JSON file of that dict. A farm without the client's key in
    its allow-list, or a wrong server key, never answers: :class:`gymfarm.errors.FarmUnavailable`
    after ``connect_timeout``.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0,
                 connect_timeout: float = 10.0, context: zmq.Context | None = None,
                 token: str | None = None, local: bool | None = None, spin_us: float | None = None,
                 keep_instances: bool = False, heartbeat: float | None = None,
                 curve: dict[str, str] | str | os.PathLike[str] | None = None,
                 curve_server_key: str | bytes | None = None, curve_public_key: str | bytes | None = None,
                 curve_secret_key: str | bytes | None = None, shm: bool | None = None,
                 name: str | None = None):
        self.curve = curve_keys(curve, curve_server_key, curve_public_key, curve_secret_key)
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._monitor: zmq.Socket | None = None
        self.lost = False  # the connection to the farm dropped (with ``heartbeat``): see FarmLost
        if heartbeat:
            ms = max(30, int(heartbeat * 1000))
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, max(10, ms // 3))
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ms)
            self._sock.setsockopt(zmq.HEARTBEAT_TTL, ms)
            self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        if self.curve is not None:
            self._sock.setsockopt(zmq.CURVE_SERVERKEY, self.curve["server_key"].encode())
            self._sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve["public_key"].encode())
            self._sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve["secret_key"].encode())
        self._sock.connect(endpoint)
        self._chan: Any = self._sock  # what requests travel on: the ZeroMQ socket or the LocalLink
        self._lock = threading.Lock()
        self._rids = itertools.count(1)
        self._outstanding: set = set()
        self._arrived: dict[int, list[bytes]] = {}
        self._given_up: set = set()
        self.duplicate_replies = 0  # replies to a request that already had one (the chaos checker reads it)
        self._closed = False
        self._last_sent = time.monotonic()
        self.token = token if token is not None else os.environ.get("GYMFARM_TOKEN")
        # the session's name in the farm's stats, `gymfarm status` and the dashboard (64 printable ASCII)
        hello: dict[str, Any] = {"version": PROTOCOL_VERSION, "client": name or "gymfarm-python", "lease": True}
        if keep_instances:
            hello["keep_instances"] = True
        if self.token:
            hello["token"] = self.token
        self._hello = hello
        try:
            self.server = self.call("hello", body=hello, timeout=connect_timeout)
        except errors.Timeout:
            self._close_monitor()
            self._sock.close(0)
            hint = "is `gymfarm start` running" + (
                ", and are these CURVE keys the farm's and allowed by it?" if self.curve else "?")
            raise errors.FarmUnavailable(f"no gymfarm answers at {endpoint} ({hint})") from None
        if local is None:
            local = os.environ.get("GYMFARM_LOCAL", "1") != "0"
        if shm is None:
            shm = os.environ.get("GYMFARM_SHM", "1") != "0"
        self.shm = bool(shm) and slab.supported()  # step and reset through shared memory when local
        self._spin = (_SLAB_SPIN_US if spin_us is None else spin_us) * 1e-6
        if local:
            self._go_local(hello, (_LINK_SPIN_US if spin_us is None else spin_us) * 1e-6, connect_timeout)
        self._stop_keepalive = threading.Event()
        lease_ms = self.server.get("lease_ms")
        if isinstance(lease_ms, int) and lease_ms > 0:
            interval = lease_ms / 3000.0
            threading.Thread(target=_keepalive, args=(weakref.ref(self), interval, self._stop_keepalive),
                             name="gymfarm-lease", daemon=True).start()

    @property
    def is_local(self) -> bool:
        """True when requests travel on the farm's local unix socket rather than ZeroMQ."""
        return self._chan is not self._sock

    def _go_local(self, hello: dict[str, Any], spin: float, timeout: float) -> None:
        path = self.server.get("local")
        here = self.endpoint.startswith(("ipc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:"))
        if not isinstance(path, str) or not path or not here:
            return
        try:
            link = LocalLink(path, spin)
        except OSError:
            return  # another host's path, or no permission: stay on ZeroMQ
        self._chan = link
        try:
            again = self.call("hello", body=hello, timeout=timeout)
        except errors.GymfarmError:
            again = {}
        if again.get("farm") is None or again.get("farm") != self.server.get("farm"):
            link.close()  # not this farm's socket (another mount namespace, say): stay on ZeroMQ
            self._chan = self._sock

    def _lost_local(self) -> errors.FarmUnavailable:
        """The local socket broke (the farm stopped): later calls go over ZeroMQ, which reconnects."""
        self._chan.close()
        self._chan = self._sock
        if self._monitor is not None:
            self.lost = True
        return errors.FarmLost(f"the connection to the farm at {self.endpoint} was lost",
                               {"endpoint": self.endpoint})

    def _check_lost(self, rids: Sequence[int] = ()) -> None:
        """With ``heartbeat``, under the lock: raises FarmLost (giving up ``rids``) once the
        connection to the farm has dropped; the requests in flight then will never be answered."""
        if self._monitor is None:
            return
        while not self.lost and self._monitor.poll(0):
            ev = self._monitor.recv_multipart()
            if len(ev[0]) >= 2 and struct.unpack_from("=H", ev[0])[0] == zmq.EVENT_DISCONNECTED:
                self.lost = True
        if self.lost:
            for r in rids:
                self._outstanding.discard(r)
            raise errors.FarmLost(f"the farm at {self.endpoint} was lost (its connection dropped)",
                                  {"endpoint": self.endpoint})

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None

    # -- plumbing -------------------------------------------------------------------------------
    #
    # Requests may be pipelined: each carries its own rid, replies are matched by rid. Replies that
    # arrive while another request is being waited for are kept in ``_arrived`` until claimed.

    def _send(self, frames: builtins.list[bytes]) -> int:
        if self._closed:
            raise errors.FarmUnavailable("this connection is closed")
        rid = next(self._rids)
        frames[2] = struct.pack("<Q", rid)
        self._last_sent = time.monotonic()
        with self._lock:
            self._check_lost()
            try:
                self._chan.send_multipart(frames, copy=False)
            except LinkClosed:
                raise self._lost_local() from None
            self._outstanding.add(rid)
        return rid

    def _wait(self, rids: Sequence[int], timeout: float | None, at_least: int | None = None
              ) -> dict[int, builtins.list[bytes]]:
        """Waits until ``at_least`` (default: all) of ``rids`` have replies; returns those that have."""
        limit = self.timeout if timeout is None else timeout
        need = len(rids) if at_least is None else at_least
        deadline = time.monotonic() + limit
        while True:
            with self._lock:
                try:
                    done = self._wait_turn(rids, need, deadline, limit)
                except LinkClosed:
                    for r in rids:
                        self._outstanding.discard(r)
                    raise self._lost_local() from None
                if done is not None:
                    return done

    def _wait_turn(self, rids: Sequence[int], need: int, deadline: float, limit: float
                   ) -> dict[int, builtins.list[bytes]] | None:
        """One turn of _wait, under the lock: the replies if enough have come, else None after
        waiting at most 5 ms (other threads may take the lock in between)."""
        chan = self._chan
        while chan.poll(0):
            self._store(chan.recv_multipart())
        done = {r: self._arrived[r] for r in rids if r in self._arrived}
        if len(done) >= need:
            for r in done:
                del self._arrived[r]
                self._outstanding.discard(r)
            return done
        self._check_lost(rids)
        left = deadline - time.monotonic()
        if left <= 0:
            for r in rids:  # late replies to these are dropped
                if r in self._outstanding and r not in self._arrived:
                    self._given_up.add(r)
                self._outstanding.discard(r)
            if len(self._given_up) > 100_000:
                self._given_up.clear()
            raise errors.Timeout(f"no reply from the farm at {self.endpoint} within {limit:g} s",
                                 {"client_side": True})
        if chan.poll(max(1, int(min(left, 0.005) * 1000))):
            self._store(chan.recv_multipart())
        return None

    def _store(self, reply: builtins.list[bytes]) -> None:
        if len(reply) >= 2 and len(reply[0]) == 8:
            rid = struct.unpack("<Q", reply[0])[0]
            if rid in self._outstanding and rid not in self._arrived:
                self._arrived[rid] = reply
            elif rid in self._given_up:
                self._given_up.discard(rid)  # a late reply to a request this client stopped waiting for
            else:
                self.duplicate_replies += 1  # a second reply to one request: the farm broke its contract

    def _ready(self, rids: Sequence[int]) -> int:
        """How many of ``rids`` have replies waiting, without waiting or claiming them (a client
        that waits on several farms at once polls each with it)."""
        with self._lock:
            try:
                while self._chan.poll(0):
                    self._store(self._chan.recv_multipart())
            except LinkClosed:
                for r in rids:
                    self._outstanding.discard(r)
                raise self._lost_local() from None
            n = sum(1 for r in rids if r in self._arrived)
            if n < len(rids):
                self._check_lost(rids)
            return n

    @staticmethod
    def _result(reply: builtins.list[bytes]) -> dict[str, Any]:
        result = codec.unpack(reply[2]) if len(reply) > 2 else {}
        if reply[1] != b"ok":
            raise errors.from_wire(result)
        return result

    @staticmethod
    def _frames(verb: str, instance: str, body: dict[str, Any] | None) -> builtins.list[bytes]:
        return [verb.encode(), instance.encode(), b"", codec.pack(body or {})]

    def call(self, verb: str, instance: str = "", body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Sends one request and returns its result map, or raises the typed error."""
        rid = self._send(self._frames(verb, instance, body))
        reply = self._wait([rid], timeout)[rid]
        if verb != "hello" and self._session_lost(reply):
            # The farm no longer knows this connection (it restarted, or dropped the idle session
            # to make room): the request was refused before anything ran, so say hello and retry.
            self.call("hello", body=self._hello, timeout=timeout)
            rid = self._send(self._frames(verb, instance, body))
            reply = self._wait([rid], timeout)[rid]
        return self._result(reply)

    def _session_lost(self, reply: builtins.list[bytes]) -> bool:
        if not self.token or reply[1] == b"ok" or len(reply) < 3:
            return False
        try:
            err = codec.unpack(reply[2])
        except Exception:
            return False
        return (isinstance(err, dict) and err.get("code") == "unauthorized"
                and isinstance(err.get("details"), dict) and err["details"].get("reason") == "no_session")

    def call_many(self, requests: Sequence[tuple[str, str, dict[str, Any] | None]],
                  timeout: float | None = None) -> builtins.list[dict[str, Any] | errors.GymfarmError]:
        """Pipelines ``[(verb, instance, body), ...]``: all are sent before any reply is awaited,
        so N requests to N workers cost one round trip. Returns results or exceptions, in order."""
        rids = [self._send(self._frames(v, i, b)) for v, i, b in requests]
        replies = self._wait(rids, timeout)
        out: list[dict[str, Any] | errors.GymfarmError] = []
        for rid in rids:
            try:
                out.append(self._result(replies[rid]))
            except errors.GymfarmError as e:
                out.append(e)
        return out

    def send_step_batch(self, steps: Sequence[tuple[str, Any]], **fields: Any) -> int:
        """Sends a batched step without waiting; returns the ticket for :meth:`wait_step_batch`."""
        frames = [b"step_batch", b"", b""]
        for instance, action in steps:
            frames.append(instance.encode())
            frames.append(codec.pack(dict(fields, action=action)))
        return self._send(frames)

    def wait_step_batch(self, ticket: int, timeout: float | None = None
                        ) -> builtins.list[dict[str, Any] | errors.GymfarmError]:
        reply = self._wait([ticket], timeout)[ticket]
        if reply[1] != b"ok":
            raise errors.from_wire(codec.unpack(reply[2]))
        out: list[dict[str, Any] | errors.GymfarmError] = []
        for i in range((len(reply) - 2) // 2):
            status, body = reply[2 + 2 * i], codec.unpack(reply[3 + 2 * i])
            out.append(body if status == b"ok" else errors.from_wire(body))
        return out

    def step_batch(self, steps: Sequence[tuple[str, Any]], timeout: float | None = None, **fields: Any
                   ) -> builtins.list[dict[str, Any] | errors.GymfarmError]:
        """Steps many instances in one message: ``[(instance_id, action), ...]``.

        Returns one entry per env, in order: the step result map, or the exception of that env
        (returned, not raised, so one failing env does not hide the others' results). Extra
        keyword fields (``autoreset="next_step"``) go into every step body.
        """
        if not steps:
            return []
        return self.wait_step_batch(self.send_step_batch(steps, **fields), timeout)

    # -- verbs ---------------------------------------------------------------------------------

    # -- shared memory (docs/protocol.md "Shared memory") ------------------------------------------

    def make_instance(self, body: dict[str, Any]) -> tuple[dict[str, Any], slab.Slab | None]:
        """A make, asking for a slab when requests go over the local socket: its result and the
        slab (None when the farm gave none). Raises the make's error."""
        (result, shared), = self.make_instances(body, 1)
        if isinstance(result, errors.GymfarmError):
            raise result
        return result, shared

    def make_instances(self, body: dict[str, Any], n: int
                       ) -> builtins.list[tuple[dict[str, Any] | errors.GymfarmError, slab.Slab | None]]:
        """``n`` makes in one round trip, each with its slab when requests go over the local
        socket: (result or error, slab or None) each."""
        if not (self.shm and self.is_local):
            return [(r, None) for r in self.call_many([("make", "", body)] * n)]
        frames = self._frames("make", "", {**body, "shm": True})
        rids = [self._send(list(frames)) for _ in range(n)]
        replies = self._wait(rids, None)
        out: builtins.list[tuple[dict[str, Any] | errors.GymfarmError, slab.Slab | None]] = []
        for rid in rids:
            reply = replies[rid]
            fds = reply[3] if len(reply) > 3 and isinstance(reply[3], slab.SlabFds) else None
            try:
                result: dict[str, Any] | errors.GymfarmError = self._result(reply)
            except errors.GymfarmError as e:
                result = e
            shared = None
            if fds is not None:
                try:
                    if isinstance(result, dict):
                        shared = slab.Slab(fds, self._spin)
                except (slab.SlabError, OSError):
                    shared = None
                finally:
                    fds.close()
            out.append((result, shared))
        return out

    def slab_post(self, shared: slab.Slab | None, verb: str, instance: str, body: dict[str, Any]) -> Any:
        """Sends a step or reset through the instance's slab, or over the socket when there is no
        slab or it cannot take the request (not served, too large); :meth:`slab_wait` collects the
        reply."""
        packed = codec.pack_body(body)
        if (shared is not None and not self._closed and shared.usable
                and shared.post(slab.STEP_RAW if verb == "step" else slab.RESET, packed)):
            return (shared, verb, instance, body)
        return self._send([verb.encode(), instance.encode(), b"", packed])

    def slab_answer(self, shared: slab.Slab, instance: str, timeout: float | None = None) -> tuple[int, Any]:
        """The answer in ``shared`` to the request posted last, within ``timeout`` seconds (default
        the client's): (status, data) as Slab.wait gives it, an OK or ERR body decoded, and a
        spilled reply fetched over the socket (then OK or ERR too). Raises Timeout, or the
        corrupt-slab error (the slab is dropped)."""
        waited = self.timeout if timeout is None else timeout
        try:
            status, data = shared.wait(waited, self._still_there)
            if status == slab.SPILLED:  # a reply too large for the slab: the worker kept it
                t = self._send(self._frames("spilled", instance, {}))
                reply = self._wait([t], timeout)[t]
                status, data = (slab.OK if reply[1] == b"ok" else slab.ERR), reply[2]
            if status in (slab.OK, slab.ERR):
                data = codec.unpack(data)
        except TimeoutError:
            raise errors.Timeout(f"no reply from the farm at {self.endpoint} within {waited:g} s",
                                 {"client_side": True}) from None
        except (slab.SlabError, ValueError) as e:  # something in the worker wrote over the slab
            raise self._corrupt(shared, instance, e) from None
        return status, data

    def slab_wait(self, ticket: Any, timeout: float | None = None) -> dict[str, Any]:
        """The result of :meth:`slab_post`'s request, within ``timeout`` seconds (default the
        client's); raises its error as the socket path does."""
        if not isinstance(ticket, tuple):
            return self._result(self._wait([ticket], timeout)[ticket])
        shared, verb, instance, body = ticket
        status, result = self.slab_answer(shared, instance, timeout)
        if status == slab.UNANSWERED:  # the instance is gone: its tombstone answers over the socket
            return self.call(verb, instance, body)
        if status == slab.REFUSED:  # only a vector step is ever refused
            raise self._corrupt(shared, instance, slab.SlabError("a step answered as a refused vector step"))
        if status == slab.ERR:
            raise errors.from_wire(result)
        return result

    def send_slab_steps(self, slabs: Sequence[slab.Slab | None], steps: Sequence[tuple[str, Any]], **fields: Any
                        ) -> builtins.list[Any]:
        """Each ``(instance_id, action)``'s step through its slab (over the socket where it has
        none), all sent before any is awaited; :meth:`wait_slab_steps` collects them. Extra keyword
        fields go into every step body, as with :meth:`step_batch`."""
        return [self.slab_post(s, "step", iid, dict(fields, action=a))
                for s, (iid, a) in zip(slabs, steps, strict=True)]

    def wait_slab_steps(self, tickets: Sequence[Any], timeout: float | None = None
                        ) -> builtins.list[dict[str, Any] | errors.GymfarmError]:
        """The results of :meth:`send_slab_steps`, in order, as :meth:`step_batch` gives them: a
        failed env's error in its place. A farm that is gone raises."""
        out: builtins.list[dict[str, Any] | errors.GymfarmError] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)  # one for them all
        for t in tickets:
            try:
                out.append(self.slab_wait(t, max(0.0, deadline - time.monotonic())))
            except errors.FarmUnavailable:
                raise
            except errors.GymfarmError as e:
                out.append(e)
        return out

    def slab_step(self, shared: slab.Slab | None, instance: str, action: Any) -> Any:
        """A step of ``action`` through the instance's slab, as :meth:`slab_call` gives it, or,
        when the compiled slab step had its raw reply while it spun, (obs, reward, terminated,
        truncated, info)."""
        try:
            got = shared.step_action(action) if shared is not None and not self._closed else False
        except slab.SlabError as e:
            raise self._corrupt(shared, instance, e) from None
        if got.__class__ is tuple:
            return got
        body = {"action": action}
        if got:
            return self.slab_wait((shared, "step", instance, body))
        return self.slab_wait(self._send([b"step", instance.encode(), b"", codec.pack_body(body)]))  # the socket

    def _corrupt(self, shared: slab.Slab, instance: str, e: Exception) -> errors.GymfarmError:
        """The error for a slab reply that does not hold together (something in the worker wrote
        over the slab); the slab is dropped, so later requests go over the socket."""
        shared.close()
        return errors.GymfarmError(f"the shared-memory reply for instance {instance} is corrupt ({e}); "
                                   "later requests go over the socket", {"instance_id": instance})

    def slab_call(self, shared: slab.Slab | None, verb: str, instance: str, body: dict[str, Any]) -> dict[str, Any]:
        """A step or reset through the instance's slab (or the socket): its result, or its error
        raised. Results and errors are the socket path's own."""
        return self.slab_wait(self.slab_post(shared, verb, instance, body))

    def _still_there(self) -> None:
        """Raises FarmUnavailable when the local socket closed (the farm is gone)."""
        with self._lock:
            try:
                while self._chan.poll(0):
                    self._store(self._chan.recv_multipart())
            except LinkClosed:
                raise self._lost_local() from None

    def make(self, env_id: str, **kwargs: Any) -> RemoteEnv:
        """Makes an env on a free worker; returns a :class:`gymnasium.Env`."""
        from .env import RemoteEnv

        return RemoteEnv(self, env_id, **kwargs)

    def make_vec(self, env_id: str, num_envs: int = 1, **kwargs: Any) -> RemoteVectorEnv:
        """Makes ``num_envs`` envs on free workers as one :class:`gymnasium.vector.VectorEnv`.

        ``autoreset_mode`` (a :class:`gymnasium.vector.AutoresetMode`, default NEXT_STEP) is taken
        as Gymnasium's own vector envs take it; other keyword arguments go to every env's make.
        The vector env uses a connection of its own, so its pipelined requests never mix with
        this one's.
        """
        from .vector import RemoteVectorEnv

        options: dict[str, Any] = {"shm": self.shm}  # the vector env's own connection, as this one's
        if self.curve is not None:
            options["curve"] = self.curve
        kwargs["farm_options"] = {**options, **(kwargs.get("farm_options") or {})}
        return RemoteVectorEnv(self.endpoint, env_id, num_envs=num_envs, timeout=self.timeout, token=self.token,
                               **kwargs)

    def make_many(self, env_id: str, num_envs: int, kwargs: dict[str, Any] | None = None
                  ) -> builtins.list[dict[str, Any]]:
        """Makes ``num_envs`` instances in one round trip; returns their make results. If any make
        fails, the ones made are closed and the first error is raised."""
        made = self.call_many([("make", "", {"env_id": env_id, "kwargs": dict(kwargs or {})})] * num_envs)
        ok = [r for r in made if isinstance(r, dict)]
        if len(ok) != len(made):
            self.close_many([r["instance_id"] for r in ok])
            errors.raise_first(made)
        return ok

    def close_many(self, instance_ids: Sequence[str], timeout: float = 10.0) -> None:
        """Closes instances in one round trip, ignoring ones already gone."""
        if instance_ids:
            try:
                self.call_many([("close", iid, None) for iid in instance_ids], timeout=timeout)
            except errors.GymfarmError:
                pass

    def ping(self) -> bool:
        return bool(self.call("ping").get("pong"))

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def list(self) -> dict[str, str]:
        """Live instances: ``{instance_id: env_id}``."""
        return self.call("list")["instances"]

    def envs(self) -> builtins.list[str]:
        """Env ids registered in the workers' Gymnasium."""
        return list(self.call("envs")["env_ids"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if hasattr(self, "_stop_keepalive"):
                self._stop_keepalive.set()
            with self._lock:  # not under a send or a poll of another thread (the lease's pings)
                if self._chan is not self._sock:
                    self._chan.close()
                self._close_monitor()
                self._sock.close(0)

    def __enter__(self) -> Farm:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _z85(key: str | bytes, what: str) -> str:
    text = key.decode() if isinstance(key, bytes) else str(key)
    text = text.strip()
    if len(text) != 40:
        raise ValueError(f"{what} must be a z85 CURVE key of 40 characters")
    return text


def read_private(path: str | os.PathLike[str], what: str) -> str:
    """The text of an owner-only file of this user (a key or a token), refused when others may read it."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionError(f"{what} {path}: must be a regular file of this user that only it may read")
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def curve_keys(curve: dict[str, str] | str | os.PathLike[str] | None = None, server_key: str | bytes | None = None,
               public_key: str | bytes | None = None, secret_key: str | bytes | None = None
               ) -> dict[str, str] | None:
    """The CURVE keys a client connects with (``server_key``, ``public_key``, ``secret_key``, z85), from
    a dict, a JSON file of one, or the three keys; None when none is given."""
    if isinstance(curve, (str, os.PathLike)):
        import json

        with open(curve) as f:
            curve = json.load(f)
    d: dict[str, Any] = dict(curve or {})
    if server_key is not None:
        d["server_key"] = server_key
    if public_key is not None:
        d["public_key"] = public_key
    if secret_key is not None:
        d["secret_key"] = secret_key
    if not d:
        return None
    if "secret_key" not in d and d.get("secret_key_file"):
        d["secret_key"] = read_private(d["secret_key_file"], "the CURVE secret key file")
    missing = [k for k in ("server_key", "public_key", "secret_key") if not d.get(k)]
    if missing:
        raise ValueError(f"CURVE needs server_key, public_key and secret_key; missing {', '.join(missing)}")
    return {k: _z85(d[k], k) for k in ("server_key", "public_key", "secret_key")}


def _keepalive(ref: weakref.ref[Farm], interval: float, stop: threading.Event) -> None:
    """Renews the farm's lease on this connection's session while it is idle over ZeroMQ (the local
    socket needs none: the farm sees it close). Holds the Farm only weakly, so that dropping it
    still closes it."""
    while not stop.wait(interval):
        farm = ref()
        if farm is None or farm._closed:
            return
        try:
            if not farm.is_local and time.monotonic() - farm._last_sent >= interval:
                farm.call("ping", timeout=max(1.0, 2 * interval))
        except (errors.GymfarmError, zmq.ZMQError, OSError):
            if farm._closed:  # closed under the ping: nothing left to renew
                return
        del farm


def connect(endpoint: Any = DEFAULT_ENDPOINT, **kwargs: Any) -> Any:
    """Connects to a farm started with ``gymfarm start`` and says hello.

    Given several farms (a list of endpoints, a :class:`gymfarm.ray.FarmCluster`, or the path of
    the file ``gymfarm cluster up`` writes), returns a :class:`gymfarm.sharded.ShardedFarm` that
    places each env on the least-loaded live farm and steps vector envs across all of them.
    """
    if isinstance(endpoint, str) and "://" in endpoint:
        return Farm(endpoint, **kwargs)
    from .sharded import ShardedFarm

    return ShardedFarm(endpoint, **kwargs)
