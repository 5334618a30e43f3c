"""A chaos harness in the style of Jepsen, for docs/reliability.md: a generator of client operations
over the native, WebSocket (Gymie) and REST (gym-http-api) frontends, a nemesis that kills, stops
and starves workers, stops the zygote, and kills and restarts the broker, envs that raise, segfault, hang, leak into
the memory limit, return NaN/inf or 100 MB observations, and a checker of the invariants over the
whole history.

Used by tests/fault/test_chaos.py (a bounded run inside the test command) and by bench/soak (the
same mix for a chosen time, with plots).
"""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

import gymfarm
from farm_fixture import FarmProcess, children_of, pid_alive, proc_comm, wait_until

FAULTY = "gymfarm_test/Faulty-v0"
# Faulty-v0 actions (tests/support/gymfarm_testenvs.py)
OK, RAISE, SEGFAULT, HANG, LEAK, NAN, HUGE = range(7)
FAULT_NAMES = {RAISE: "env_raise", SEGFAULT: "env_segfault", HANG: "env_hang", LEAK: "env_leak",
               NAN: "env_nan_inf", HUGE: "env_100mb_obs"}
STEP_TIMEOUT = 2.0
MAKE_TIMEOUT = 20.0
SLACK = 4.0  # scheduling slack on a loaded 2-core machine, on top of the farm's own deadlines
# Errors after which an instance is gone for good: no later request on it may succeed. (A memory
# limit raises MemoryError inside the env and the instance stays; a CPU limit kills the worker.)
FATAL = {"worker_crashed", "timeout", "resource_limit:killed"}

# Under ASan an address-space limit cannot hold the shadow memory, so the memory limit (and the env
# that leaks into it) are left out of sanitizer runs.
SANITIZED = os.environ.get("GYMFARM_SANITIZER") == "asan"
FARM_ARGS = ["--step-timeout", str(int(STEP_TIMEOUT)), "--make-timeout", str(int(MAKE_TIMEOUT)),
             "--restart-budget", "1000"] + ([] if SANITIZED else ["--worker-memory-limit", "1536"])


@dataclass
class Op:
    client: str
    frontend: str
    kind: str      # make, reset, step, close
    instance: str
    start: float
    end: float
    outcome: str   # "ok", an error code, "close:<code>" (Gymie), "http:<status>" (REST), "untyped:<what>"
    deadline: float
    fault: str = ""  # the env fault the client asked for, if any


@dataclass
class History:
    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    faults: list[tuple[float, str, int]] = field(default_factory=list)  # (t, kind, pid)
    samples: list[dict] = field(default_factory=list)  # periodic farm snapshots
    down: list[tuple[float, float]] = field(default_factory=list)  # broker down intervals
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, o: Op) -> None:
        with self.lock:
            self.ops.append(o)

    def fault(self, kind: str, pid: int) -> None:
        with self.lock:
            self.faults.append((time.monotonic(), kind, pid))

    def summary(self) -> str:
        by_frontend = collections.Counter((o.frontend, o.kind) for o in self.ops)
        outcomes = collections.Counter(o.outcome for o in self.ops)
        nemesis = collections.Counter(k for _, k, _ in self.faults)
        env_faults = collections.Counter(o.fault for o in self.ops if o.fault)
        lines = [f"history: {len(self.ops)} operations in {time.monotonic() - self.t0:.1f} s"]
        lines.append("  operations: " + ", ".join(f"{f}/{k}={n}" for (f, k), n in sorted(by_frontend.items())))
        lines.append("  outcomes:   " + ", ".join(f"{k}={n}" for k, n in outcomes.most_common()))
        lines.append("  nemesis:    " + (", ".join(f"{k}={n}" for k, n in sorted(nemesis.items())) or "none"))
        lines.append("  env faults: " + (", ".join(f"{k}={n}" for k, n in sorted(env_faults.items())) or "none"))
        return "\n".join(lines)


class Client(threading.Thread):
    """One simulated user: episodes of make, reset, steps (some with a fault), close."""

    frontend = ""

    def __init__(self, name: str, farm: Chaos, history: History, seed: int, fault_rate: float,
                 faults: tuple[int, ...]):
        super().__init__(name=name, daemon=True)
        self.farm = farm
        self.history = history
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.faults = faults
        self.stop_event = threading.Event()
        self.instance = ""

    def record(self, kind: str, start: float, outcome: str, limit: float, fault: str = "") -> None:
        self.history.op(Op(self.name, self.frontend, kind, self.instance, start, time.monotonic(), outcome,
                           start + limit + SLACK, fault))

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.episode()
            except Exception as e:  # recorded as untyped; the checker decides whether it was allowed
                self.record("client", time.monotonic(), f"untyped:{type(e).__name__}", 0)
                self.reconnect()
                time.sleep(0.2)

    def episode(self) -> None:
        env_id = FAULTY if self.rng.random() < 0.5 else "CartPole-v1"
        if not self.do("make", MAKE_TIMEOUT, env_id=env_id):
            time.sleep(0.2)
            return
        if self.do("reset", STEP_TIMEOUT):
            for _ in range(self.rng.randint(5, 40)):
                if self.stop_event.is_set():
                    break
                action = self.rng.randint(0, 1)
                fault = ""
                if env_id == FAULTY:
                    action = 0
                    if self.rng.random() < self.fault_rate:
                        action = self.rng.choice(self.faults)
                        fault = FAULT_NAMES[action]
                if not self.do("step", STEP_TIMEOUT, action=action, fault=fault):
                    # the instance is gone or the connection closed: one more request shows it stays gone
                    self.do("step", STEP_TIMEOUT, action=0)
                    break
        self.do("close", STEP_TIMEOUT)
        self.instance = ""

    def do(self, kind: str, limit: float, fault: str = "", **kw) -> bool:
        start = time.monotonic()
        outcome = self.request(kind, **kw)
        self.record(kind, start, outcome, limit, fault)
        return outcome == "ok"

    def request(self, kind: str, **kw) -> str:
        raise NotImplementedError

    def reconnect(self) -> None:
        pass

    def close(self) -> None:
        pass


class NativeClient(Client):
    frontend = "native"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.conn: gymfarm.Farm | None = None
        self.duplicates = 0

    def reconnect(self) -> None:
        if self.conn is not None:
            self.duplicates += self.conn.duplicate_replies
            self.conn.close()
        self.conn = None

    def request(self, kind: str, **kw) -> str:
        try:
            if self.conn is None:
                self.conn = gymfarm.connect(self.farm.endpoint, timeout=STEP_TIMEOUT + SLACK, connect_timeout=5)
            if kind == "make":
                self.instance = self.conn.call("make", body={"env_id": kw["env_id"]},
                                               timeout=MAKE_TIMEOUT + SLACK)["instance_id"]
            elif kind == "reset":
                self.conn.call("reset", self.instance, {"seed": self.rng.randint(0, 1000)})
            elif kind == "step":
                r = self.conn.call("step", self.instance, {"action": kw["action"]})
                if kw["action"] == HUGE and getattr(r["obs"], "nbytes", 0) != 100_000_000:
                    return "untyped:short_observation"
            elif kind == "close":
                if self.instance:
                    self.conn.call("close", self.instance)
            return "ok"
        except gymfarm.GymfarmError as e:
            if isinstance(e, gymfarm.Timeout) and e.details.get("client_side"):
                self.reconnect()
                return "untyped:no_reply"
            if isinstance(e, gymfarm.FarmUnavailable):
                self.reconnect()
                return "untyped:unavailable"
            if e.code == "resource_limit" and "signal" in e.details:
                return "resource_limit:killed"
            return e.code

    def close(self) -> None:
        self.reconnect()


class GymieClient(Client):
    frontend = "gymie"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ws = None

    def reconnect(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
        self.ws = None

    def request(self, kind: str, **kw) -> str:
        if kind == "close":  # Gymie has no close: the farm closes the instance with the connection
            self.reconnect()
            return "ok"
        try:
            if self.ws is None:
                self.ws = ws_connect(self.farm.gymie_url, open_timeout=5, close_timeout=2, max_size=None)
            params: dict[str, object] = {}
            if kind == "make":
                params = {"env_id": kw["env_id"]}
            else:
                params = {"instance_id": self.instance}
                if kind == "step":
                    params["action"] = kw["action"]
            self.ws.send(json.dumps({"method": kind, "params": params}))
            frame = self.ws.recv(timeout=(MAKE_TIMEOUT if kind == "make" else STEP_TIMEOUT) + SLACK)
            if kind == "make":
                self.instance = frame  # Gymie answers make with the bare instance id
            else:
                json.loads(frame)  # a complete JSON value
            return "ok"
        except ConnectionClosed as e:
            self.ws = None
            return f"close:{e.rcvd.code}" if e.rcvd is not None else "untyped:dropped"
        except (TimeoutError, OSError) as e:
            self.reconnect()
            return f"untyped:{type(e).__name__}"


class RestClient(Client):
    frontend = "rest"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.session = requests.Session()

    def request(self, kind: str, **kw) -> str:
        base = self.farm.rest_url.rstrip("/").removesuffix("/v1")
        timeout = (MAKE_TIMEOUT if kind == "make" else STEP_TIMEOUT) + SLACK
        try:
            if kind == "make":
                r = self.session.post(f"{base}/v1/envs/", json={"env_id": kw["env_id"]}, timeout=timeout)
                if r.status_code == 200:
                    self.instance = r.json()["instance_id"]
            elif kind == "reset":
                r = self.session.post(f"{base}/v1/envs/{self.instance}/reset/", json={}, timeout=timeout)
            elif kind == "step":
                r = self.session.post(f"{base}/v1/envs/{self.instance}/step/", json={"action": kw["action"]},
                                      timeout=timeout)
            else:
                if not self.instance:
                    return "ok"
                r = self.session.post(f"{base}/v1/envs/{self.instance}/close/", timeout=timeout)
            if r.status_code in (200, 204):
                if r.status_code == 200:
                    r.json()  # a complete JSON body
                return "ok"
            body = r.json()  # errors are typed: a JSON message
            if "message" not in body:
                return "untyped:no_message"
            if "killed by signal" in body["message"] or "did not finish within" in body["message"]:
                return "worker_crashed"  # the instance is gone: the checker holds later requests to that
            return f"http:{r.status_code}"
        except (requests.RequestException, ValueError) as e:
            self.session = requests.Session()
            return f"untyped:{type(e).__name__}"


class Chaos:
    """A farm, its clients and the nemesis; `run()` drives them and `check()` judges the history."""

    def __init__(self, tmp: Path, workers: int = 5, seed: int = 1, nemesis_interval: float = 1.5,
                 fault_rate: float = 0.08, huge_obs: bool = True):
        self.tmp = tmp
        self.workers = workers
        self.seed = seed
        self.rng = random.Random(seed)
        self.nemesis_interval = nemesis_interval
        self.fault_rate = fault_rate
        self.history = History()
        self.fp: FarmProcess | None = None
        self.seen_pids: set = set()
        self.broker_pids: list[int] = []
        self.instance_pids: dict[str, set] = collections.defaultdict(set)
        self.violations: list[str] = []
        self.duplicates = 0
        self.huge_obs = huge_obs
        self.start_farm(args=[])
        self.endpoint = self.fp.endpoint
        self.gymie_url = self.fp.gymie_url
        self.rest_url = self.fp.rest_url

    # ---- the farm ----------------------------------------------------------------------------

    def start_farm(self, args: list[str]) -> None:
        self.fp = FarmProcess(self.tmp / f"farm{len(self.broker_pids)}", workers=self.workers,
                              args=FARM_ARGS + args)
        self.broker_pids.append(self.fp.pid)
        self.stats_conn = gymfarm.connect(self.fp.endpoint, timeout=5)

    def sample(self) -> dict | None:
        """A snapshot: worker pids and instances, broker RSS and open files."""
        try:
            stats = self.stats_conn.stats()
        except gymfarm.GymfarmError:
            return None
        pid = self.fp.pid
        snap = {"t": time.monotonic() - self.history.t0, "broker_pid": pid, "broker_rss": rss(pid),
                "broker_fds": fds(pid),
                "workers": [(w["worker"], w["pid"], w["state"], w["instance"]) for w in stats["workers"]],
                "worker_rss": sum(w["rss_bytes"] for w in stats["workers"]),
                "restarts": sum(w["restarts"] for w in stats["workers"]),
                "zombies": sum(1 for c in children_of(pid) if proc_state(c) == "Z")}
        instances = collections.Counter(i for _, _, _, i in snap["workers"] if i)
        for inst, n in instances.items():
            if n > 1:
                self.violations.append(f"instance {inst} held by {n} workers at once")
        for _, wpid, _, inst in snap["workers"]:
            if wpid:
                self.seen_pids.add(wpid)
            if inst and wpid:
                self.instance_pids[inst].add(wpid)
        with self.history.lock:
            self.history.samples.append(snap)
        return snap

    # ---- the nemesis -------------------------------------------------------------------------

    def nemesis_step(self) -> None:
        pids = [p for p in children_of(self.fp.pid) if proc_state(p) not in ("Z", "T")]
        if not pids:
            return
        victim = self.rng.choice(pids)
        kind = self.rng.choice(["kill9", "kill9", "sigstop", "starve"])
        try:
            if kind == "kill9":
                os.kill(victim, signal.SIGKILL)
            elif kind == "sigstop":  # stays stopped: the broker's deadline or heartbeat check kills it
                os.kill(victim, signal.SIGSTOP)
            else:  # a short starvation, well inside every deadline: requests must still succeed
                os.kill(victim, signal.SIGSTOP)
                time.sleep(0.3)
                os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            return
        self.history.fault(("zygote_" if proc_comm(victim) == "gf-zygote" else "") + kind, victim)

    def stop_zygote(self) -> None:
        """SIGSTOP of the zygote: the next worker it is asked for does not come, so the broker must
        kill it after 5 s and start workers fresh from then on."""
        for pid in children_of(self.fp.pid):
            if proc_comm(pid) == "gf-zygote":
                os.kill(pid, signal.SIGSTOP)
                self.history.fault("zygote_sigstop", pid)
                return

    def restart_broker(self) -> None:
        """kill -9 of the broker mid-load; its workers must exit by themselves; then a new farm on
        the same ports."""
        workers = children_of(self.fp.pid)
        t_down = time.monotonic()
        os.kill(self.fp.pid, signal.SIGKILL)
        self.history.fault("broker_kill9", self.fp.pid)
        self.fp.proc.wait(10)
        if not wait_until(lambda: not any(pid_alive(p) for p in workers), 10):
            self.violations.append(f"workers {[p for p in workers if pid_alive(p)]} outlived the killed broker")
        self.stats_conn.close()
        old = self.fp
        old.stop()
        native = old.endpoint.rsplit(":", 1)[1]
        gateway = old.gymie_url.split(":")[2].split("/")[0]
        gymnasium_port = old.gymnasium_url.rsplit(":", 1)[1].split("/")[0]
        # the old sockets may linger a moment; retry the bind for a few seconds
        deadline = time.monotonic() + 20
        while True:
            try:
                self.start_farm(["--native-port", native, "--port", gateway, "--gymnasium-http-port", gymnasium_port])
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.history.down.append((t_down, time.monotonic()))

    # ---- the run -----------------------------------------------------------------------------

    def run(self, seconds: float, broker_restart: bool = True, on_sample: Callable[[dict], None] | None = None
            ) -> None:
        self.quiet_sample()
        faults_native = ((RAISE, SEGFAULT, HANG, NAN) + (() if SANITIZED else (LEAK,))
                         + ((HUGE,) if self.huge_obs else ()))
        faults_web = (RAISE, SEGFAULT, HANG, NAN)
        clients: list[Client] = [
            NativeClient("native-0", self, self.history, self.seed * 10 + 0, self.fault_rate, faults_native),
            NativeClient("native-1", self, self.history, self.seed * 10 + 1, self.fault_rate, faults_native),
            GymieClient("gymie-0", self, self.history, self.seed * 10 + 2, self.fault_rate, faults_web),
            RestClient("rest-0", self, self.history, self.seed * 10 + 3, self.fault_rate, faults_web),
        ]
        for c in clients:
            c.start()
        end = time.monotonic() + seconds
        restart_at = time.monotonic() + seconds * 0.6 if broker_restart else float("inf")
        zygote_at = time.monotonic() + seconds * 0.25
        next_nemesis = time.monotonic() + self.nemesis_interval
        while time.monotonic() < end:
            snap = self.sample()
            if snap and on_sample:
                on_sample(snap)
            now = time.monotonic()
            if now >= zygote_at:
                zygote_at = float("inf")
                self.stop_zygote()
            if now >= restart_at:
                restart_at = float("inf")
                self.restart_broker()
            elif now >= next_nemesis:
                self.nemesis_step()
                next_nemesis = now + self.rng.uniform(0.5, 1.5) * self.nemesis_interval
            time.sleep(0.25)
        for c in clients:
            c.stop_event.set()
        for c in clients:
            c.join(MAKE_TIMEOUT + SLACK + 5)
            if c.is_alive():
                self.violations.append(f"client {c.name} did not finish its last request")
        self.duplicates = sum(c.duplicates + (c.conn.duplicate_replies if c.conn else 0)
                              for c in clients if isinstance(c, NativeClient))
        for c in clients:
            c.close()
        self.clients = clients
        self.quiet_sample()

    def quiet_sample(self) -> dict:
        """Waits until every worker is back (idle or assigned), then samples."""
        ok = wait_until(lambda: all_back(self.stats_conn, self.workers), 45, 0.2)
        if not ok:
            try:
                now = self.stats_conn.stats()["workers"]
            except gymfarm.GymfarmError as e:
                now = f"no stats: {e}"
            self.violations.append(f"the worker count did not return to {self.workers}: {now}")
        snap = self.sample() or {}
        if snap.get("zombies"):
            self.violations.append(f"{snap['zombies']} zombie workers after the farm settled")
        return snap

    def stop(self) -> None:
        try:
            self.stats_conn.close()
        except Exception:
            pass
        workers = children_of(self.fp.pid)
        rc = self.fp.stop()
        if rc != 0:
            self.violations.append(f"the farm exited with {rc} on SIGTERM")
        self.seen_pids.update(workers)
        if not wait_until(lambda: not any(pid_alive(p) for p in self.seen_pids), 15):
            self.violations.append(f"orphaned workers: {[p for p in self.seen_pids if pid_alive(p)]}")

    # ---- the checker -------------------------------------------------------------------------

    def check(self) -> list[str]:
        v = list(self.violations)

        def during_down(o: Op) -> bool:
            return any(o.start <= up + 1.0 and o.end >= down - 1.0 for down, up in self.history.down)

        for o in self.history.ops:
            if o.outcome.startswith("untyped") and not during_down(o):
                v.append(f"{o.client} {o.kind} on {o.instance or '-'} got no typed reply: {o.outcome}")
            if o.end > o.deadline and not during_down(o):
                v.append(f"{o.client} {o.kind} took {o.end - o.start:.2f} s, past its deadline")
        # an instance that died never serves again: no silent re-creation
        dead: dict[str, float] = {}
        for o in sorted(self.history.ops, key=lambda o: o.start):
            if not o.instance:
                continue
            if o.outcome in FATAL:
                dead.setdefault(o.instance, o.end)
            elif (o.outcome == "ok" and o.kind in ("reset", "step") and o.instance in dead
                  and o.start > dead[o.instance]):
                v.append(f"instance {o.instance} answered {o.kind} after it died")
        for inst, pids in self.instance_pids.items():
            if len(pids) > 1:
                v.append(f"instance {inst} was served by workers {sorted(pids)}")
        if self.duplicates:
            v.append(f"{self.duplicates} requests got a second reply")
        for pid in self.broker_pids:  # each broker's last sample against its first
            mine = [s for s in self.history.samples if s["broker_pid"] == pid and s["broker_fds"]]
            if len(mine) < 2:
                continue
            first, last = mine[0], mine[-1]
            if last["broker_fds"] > first["broker_fds"] + 32:
                v.append(f"broker {pid} open files grew {first['broker_fds']} -> {last['broker_fds']}")
            if last["broker_rss"] > first["broker_rss"] + (256 << 20):
                v.append(f"broker {pid} RSS grew {first['broker_rss']} -> {last['broker_rss']}")
        ok_steps = [o for o in self.history.ops if o.kind == "step" and o.outcome == "ok"]
        if not ok_steps:
            v.append("no step succeeded at all")
        if self.history.down:
            up = self.history.down[-1][1]
            for fe in ("native", "gymie", "rest"):
                if not any(o.frontend == fe and o.outcome == "ok" and o.start > up for o in self.history.ops):
                    v.append(f"no {fe} request succeeded after the broker restart")
        return v


def all_back(conn: gymfarm.Farm, n: int) -> bool:
    try:
        ws = conn.stats()["workers"]
    except gymfarm.GymfarmError:
        return False
    return len(ws) == n and all(w["state"] in ("idle", "assigned") for w in ws)


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
