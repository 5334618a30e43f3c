"""`gymfarm nodes` (python -m gymfarm.nodes): one farm per node without Ray, on loopback. Farms run
on 127.0.0.2, 127.0.0.3 (and 127.0.0.4), each a `nodes run` child of the test, stopped by pid; the
Slurm example runs end to end with a fake `srun` (tests/support/fake-slurm/srun) and the Kubernetes
example's command goes through `nodes run`'s parser."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import zmq
from gymnasium.vector import AutoresetMode

import gymfarm
from farm_fixture import GYMFARM, ROOT, children_of, pid_alive, terminate, wait_until
from gymfarm import nodes
from gymfarm.errors import FarmUnavailable, Unauthorized
from gymfarm.sharded import _resolve, farms_dir_endpoints

ENV = dict(
    os.environ,
    GYMFARM_BIN_DIR=str(GYMFARM.parent),
    PYTHONPATH=os.pathsep.join([str(ROOT / "python"), *filter(None, [os.environ.get("PYTHONPATH")])]),
)


def run_nodes(*args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "gymfarm.nodes", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


class NodeRun:
    """`gymfarm nodes run DIR --host HOST --port 0` as a child of the test; `farm_pid` is its farm."""

    def __init__(self, d, host, log, workers=2, name=None, env=None):
        self.dir, self.host = Path(d), host
        self._log = open(log, "w")
        self.log_path = log
        self.t0 = time.time()
        args = ["run", str(d), "--host", host, "--port", "0", "--workers", str(workers)]
        args += ["--name", name] if name else []
        self.proc = subprocess.Popen([sys.executable, "-m", "gymfarm.nodes", *args], env=env or ENV,
                                     stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)  # fmt: skip
        if not wait_until(lambda: self.registration() is not None or self.proc.poll() is not None, 60, 0.05):
            self.stop()
            raise AssertionError(f"no registration within 60 s: {self.log()}")
        reg = self.registration()
        assert reg is not None, self.log()
        self.endpoint, self.farm_pid = reg["endpoint"], reg["pid"]
        self.file = self.dir / "farms" / f"{reg['name']}.json"

    def registration(self):
        for f in (self.dir / "farms").glob("*.json"):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("host") == self.host and doc.get("started", 0) >= self.t0:  # this run's
                return dict(doc, name=f.stem)
        return None

    def log(self):
        self._log.flush()
        return Path(self.log_path).read_text()

    def stop(self, timeout=45.0):
        """SIGTERM to `nodes run` by pid; its farm and every process of it must be gone after."""
        terminate(self.proc, timeout)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def runs(tmp_path):
    """Factory: runs(DIR, HOST) -> NodeRun; every run is stopped at teardown and must leave no farm
    process behind."""
    started = []
    # the farms' runtime directories (worker sockets: a short path) go here, removed at the end, also
    # those of a run that was killed
    tmp = tempfile.mkdtemp(prefix="gf-t-")
    env = dict(ENV, TMPDIR=tmp)

    def start(d, host, name=None):
        r = NodeRun(d, host, tmp_path / f"run-{host}-{len(started)}.log", name=name, env=env)
        started.append((r, [r.farm_pid, *children_of(r.farm_pid)]))
        return r

    yield start
    for r, pids in started:
        r.stop()
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 15), f"left behind: {pids}"  # noqa: B023
    shutil.rmtree(tmp)


@pytest.fixture
def farm_dir(tmp_path):
    d = tmp_path / "farm"
    run_nodes("init", d)
    return d


def test_init_makes_owner_only_files_and_keeps_them(tmp_path):
    d = tmp_path / "farm"
    run_nodes("init", d)
    assert mode(d) == 0o700 and mode(d / "farms") == 0o700
    names = ["token", "server.key", "client.key", "clients"]
    for n in names:
        assert stat.S_ISREG(os.lstat(d / n).st_mode) and mode(d / n) == 0o600, n
    assert re.fullmatch(r"[0-9a-f]{64}", (d / "token").read_text().strip())
    client_secret = (d / "client.key").read_text().strip()
    assert (d / "clients").read_text().split() == [zmq.curve_public(client_secret.encode()).decode()]
    assert len((d / "server.key").read_text().strip()) == 40
    before = {n: (d / n).read_text() for n in names}
    run_nodes("init", d)  # idempotent: the same token and keys
    assert {n: (d / n).read_text() for n in names} == before
    run_nodes("init", d, "--rotate")
    after = {n: (d / n).read_text() for n in names}
    assert all(after[n] != before[n] for n in names)
    assert after["clients"].split() == [zmq.curve_public(after["client.key"].strip().encode()).decode()]
    assert all(mode(d / n) == 0o600 for n in names)
    # a directory that the group may read is refused, by init and by run
    d.chmod(0o750)
    r = run_nodes("init", d, check=False)
    assert r.returncode != 0 and "group or others" in r.stderr
    r = run_nodes("run", d, "--host", "127.0.0.2", "--port", "0", check=False)
    assert r.returncode != 0 and "group or others" in r.stderr
    d.chmod(0o700)
    # a key file that is a symlink is refused, never followed
    (d / "client.key").unlink()
    (d / "client.key").symlink_to(d / "token")
    r = run_nodes("init", d, check=False)
    assert r.returncode != 0 and "client.key" in r.stderr
    # inits that run at once (every pod of a DaemonSet) end up with one set of keys
    fresh = tmp_path / "fresh"
    procs = [subprocess.Popen([sys.executable, "-m", "gymfarm.nodes", "init", str(fresh)], env=ENV,
                              stderr=subprocess.DEVNULL) for _ in range(4)]  # fmt: skip
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    secret = (fresh / "client.key").read_text().strip().encode()
    assert (fresh / "clients").read_text().split() == [zmq.curve_public(secret).decode()]
    assert sorted(os.listdir(fresh)) == ["client.key", "clients", "farms", "server.key", "token"]
    assert all(mode(fresh / n) == 0o600 for n in names)
    if os.geteuid() == 0:  # a directory of another user (only root can make one here)
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
        r = run_nodes("init", other, check=False)
        assert r.returncode != 0 and "another user" in r.stderr


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_two_nodes_one_client_matches_sync_vector_env(farm_dir, runs, tmp_path):
    a, b = runs(farm_dir, "127.0.0.2"), runs(farm_dir, "127.0.0.3")
    assert mode(a.file) == 0o600
    reg = json.loads(a.file.read_text())
    assert reg["endpoint"].startswith("tcp://127.0.0.2:") and reg["pid"] == a.farm_pid and reg["started"] > 0
    out = tmp_path / "cluster.json"
    run_nodes("file", farm_dir, out, "--wait", 2, "--timeout", 30)
    assert mode(out) == 0o600
    doc = json.loads(out.read_text())
    assert sorted(doc["endpoints"]) == sorted([a.endpoint, b.endpoint])
    assert doc["token_file"] == str(farm_dir / "token") and doc["farms_dir"] == str(farm_dir / "farms")
    assert doc["curve"]["secret_key_file"] == str(farm_dir / "client.key")
    status = run_nodes("status", farm_dir).stdout
    assert "2/2 registered farms reachable" in status and a.endpoint in status and b.endpoint in status
    with gymfarm.connect(str(out)) as farm:
        venv = farm.make_vec("CartPole-v1", num_envs=4, autoreset_mode=AutoresetMode.NEXT_STEP)
        per = {f["endpoint"]: f["instances"] for f in farm.stats()["farms"]}
        assert per == {a.endpoint: 2, b.endpoint: 2}
        ref = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4, autoreset_mode=AutoresetMode.NEXT_STEP)
        obs, _ = venv.reset(seed=11)
        robs, _ = ref.reset(seed=11)
        assert np.array_equal(obs, robs)
        rng = np.random.default_rng(3)
        for _ in range(150):
            act = rng.integers(0, 2, size=4)
            _same(venv.step(act)[:4], ref.step(act)[:4])
        venv.close()
        ref.close()


def test_a_client_without_the_curve_key_or_without_the_token_is_refused(farm_dir, runs, tmp_path):
    a = runs(farm_dir, "127.0.0.2")
    out = tmp_path / "cluster.json"
    run_nodes("file", farm_dir, out, "--wait", 1)
    token = (farm_dir / "token").read_text().strip()
    keys = dict(json.loads(out.read_text())["curve"], secret_key=(farm_dir / "client.key").read_text().strip())
    del keys["secret_key_file"]
    t0 = time.monotonic()
    with pytest.raises(FarmUnavailable):  # the token, but no CURVE key: no answer
        gymfarm.connect(a.endpoint, token=token, local=False, connect_timeout=2)
    assert time.monotonic() - t0 < 8
    with pytest.raises(Unauthorized):  # the key, but no token
        gymfarm.connect(a.endpoint, token="", curve=keys, local=False).make("CartPole-v1")
    with gymfarm.connect(a.endpoint, token=token, curve=keys, local=False) as farm:  # both: served
        farm.make("CartPole-v1").reset(seed=0)


def test_a_later_node_is_picked_up_and_a_stopped_one_leaves(farm_dir, runs, tmp_path):
    a, b = runs(farm_dir, "127.0.0.2"), runs(farm_dir, "127.0.0.3")
    out = tmp_path / "cluster.json"
    run_nodes("file", farm_dir, out, "--wait", 2)
    with gymfarm.connect(str(out), refresh_s=0.5) as farm:
        first = [farm.make("CartPole-v1") for _ in range(2)]
        assert sorted(farm.endpoints) == sorted([a.endpoint, b.endpoint])
        c = runs(farm_dir, "127.0.0.4")  # registered after the client opened the file
        t0 = time.monotonic()
        assert wait_until(lambda: c.endpoint in farm.endpoints, 10)
        assert time.monotonic() - t0 < 3  # within a refresh or two
        env = farm.make("CartPole-v1")  # the least-loaded farm: the new one
        env.reset(seed=0)
        assert {f["endpoint"]: f["instances"] for f in farm.stats()["farms"]}[c.endpoint] == 1
        # SIGTERM to that node's `nodes run`: its registration goes, then its farm and workers
        pids = [c.farm_pid, *children_of(c.farm_pid)]
        assert len(pids) > 1
        assert c.stop() == 0, c.log()
        assert not c.file.exists()
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 15), pids
        assert wait_until(lambda: c.endpoint not in farm.endpoints, 10)
        for e in first:  # the other nodes' envs go on
            e.reset(seed=1)
            e.step(0)
        assert farm.make("CartPole-v1").farm.endpoint in (a.endpoint, b.endpoint)
        assert run_nodes("status", farm_dir).stdout.count("tcp://") == 2


def test_a_killed_run_takes_its_farm_along_and_its_registration_is_replaced(farm_dir, runs):
    a = runs(farm_dir, "127.0.0.2", name="node0")
    pids = [a.farm_pid, *children_of(a.farm_pid)]
    os.kill(a.proc.pid, signal.SIGKILL)  # nothing of `nodes run` runs after this
    assert a.proc.wait(10) == -signal.SIGKILL
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 15), pids  # PR_SET_PDEATHSIG
    assert a.file.exists()  # left behind: shown unreachable
    assert "0/1 registered farms reachable" in run_nodes("status", farm_dir).stdout
    b = runs(farm_dir, "127.0.0.2", name="node0")  # the same name: its registration replaces the stale one
    assert b.file == a.file and json.loads(b.file.read_text())["pid"] == b.farm_pid != a.farm_pid
    assert "1/1 registered farms reachable" in run_nodes("status", farm_dir).stdout


def test_farms_dir_skips_what_is_not_a_farm_registration(tmp_path):
    d = tmp_path / "farms"
    d.mkdir(mode=0o700)
    good = {"endpoint": "tcp://127.0.0.2:5555", "host": "127.0.0.2", "pid": 1}
    (d / "a.json").write_text(json.dumps(good))
    (d / "b.json").write_text("not json")
    (d / "c.json").write_text(json.dumps({"endpoint": "ipc://farm.sock"}))
    (d / "d.json").write_text(json.dumps({"endpoint": "tcp://" + "x" * 300}))
    (d / "e.json").write_text(json.dumps(["tcp://127.0.0.9:1"]))
    (d / "f.json").symlink_to(d / "a.json")
    os.mkfifo(d / "g.json")
    (d / "h.txt").write_text(json.dumps({"endpoint": "tcp://127.0.0.8:1"}))
    (d / "i.json").write_text(json.dumps({"endpoint": "tcp://127.0.0.3:5555"}))
    assert farms_dir_endpoints(d) == ["tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555"]
    assert farms_dir_endpoints(tmp_path / "missing") is None
    # a cluster file follows farms_dir, and falls back to its own list when the directory is unreadable
    tok = tmp_path / "token"
    tok.write_text("0123456789abcdef0123")
    tok.chmod(0o600)
    cf = tmp_path / "cluster.json"
    cf.write_text(json.dumps({"endpoints": ["tcp://127.0.0.7:1"], "token_file": str(tok), "farms_dir": str(d)}))
    assert _resolve(str(cf)) == (["tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555"], "0123456789abcdef0123")
    cf.write_text(
        json.dumps({"endpoints": ["tcp://127.0.0.7:1"], "token_file": str(tok), "farms_dir": str(tmp_path / "missing")})
    )
    assert _resolve(str(cf))[0] == ["tcp://127.0.0.7:1"]


def test_the_cli_hands_nodes_to_the_python_package():
    r = subprocess.run([str(GYMFARM), "nodes", "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and "{init,run,file,status}" in r.stdout, r.stderr


def test_the_slurm_example_runs_end_to_end_with_a_fake_srun(tmp_path):
    d = tmp_path / "jobs" / "farm"
    path = os.pathsep.join(
        [str(GYMFARM.parent), str(ROOT / "tests" / "support" / "fake-slurm"), os.environ["PATH"]]
    )
    env = dict(
        ENV,
        PATH=path,
        HOME=str(tmp_path),
        GYMFARM_DIR=str(d),
        SLURM_JOB_NUM_NODES="2",
        SLURM_JOB_ID="7",
        GYMFARM_PORT="0",
        GYMFARM_WORKERS="2",
        PYTHON=sys.executable,
    )
    env.pop("GYMFARM_NODE_HOST", None)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "examples" / "slurm" / "gymfarm.sbatch")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the script did not finish: {err}") from None
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["farms"] == 2
    hosts = sorted(re.match(r"tcp://([0-9.]+):", ep).group(1) for ep in result["envs_per_farm"])
    assert hosts == ["127.0.0.2", "127.0.0.3"]  # GYMFARM_NODE_HOST, as the fake srun set it per node
    assert list(result["envs_per_farm"].values()) == [2, 2]
    farm_pids = [int(p) for p in re.findall(r"farm ready: \S+ \(pid (\d+)\)", err)]
    assert len(farm_pids) == 2, err
    assert err.count("exited with status 0") == 2, err
    assert wait_until(lambda: not any(pid_alive(p) for p in farm_pids), 15)
    assert list((d / "farms").iterdir()) == []  # both registrations removed
    assert mode(d) == 0o700 and mode(d / "cluster.json") == 0o600


def test_the_daemonset_command_is_one_nodes_run_accepts():
    text = (ROOT / "examples" / "kubernetes" / "gymfarm-daemonset.yaml").read_text()
    try:
        import yaml
    except ImportError:  # no YAML parser: the command line as written
        yaml = None
    if yaml is None:
        m = re.search(r'command: \["gymfarm", "nodes", (.*)\]\n', text.split("containers:\n", 2)[2])
        command = ["gymfarm", "nodes", *json.loads(f"[{m.group(1)}]")]
        assert "hostNetwork: true" in text and "fieldPath: status.podIP" in text
    else:
        (ds,) = [doc for doc in yaml.safe_load_all(text) if doc and doc.get("kind") == "DaemonSet"]
        spec = ds["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True
        (init,) = spec["initContainers"]
        assert nodes.parse_args(init["command"][2:]).command == "init"
        (container,) = spec["containers"]
        command = container["command"]
        (pod_ip,) = [e for e in container["env"] if e["name"] == "POD_IP"]
        assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        (mount,) = container["volumeMounts"]
        assert mount["mountPath"] == "/farm"
        assert any(v["name"] == mount["name"] for v in spec["volumes"])
    assert command[:2] == ["gymfarm", "nodes"]
    a = nodes.parse_args([arg.replace("$(POD_IP)", "10.0.0.5") for arg in command[2:]])
    assert (a.command, a.dir, a.host, a.port) == ("run", "/farm", "10.0.0.5", 5555)
