"""`gymfarm cluster up|status|down` on a two-node Ray cluster on this machine: the cluster file
that gymfarm.connect(PATH) reads, an owner-only token file, and nothing left after `down`."""
import json
import os
import stat
import subprocess

import numpy as np
import pytest

from farm_fixture import GYMFARM, ROOT, SUPPORT, children_of, pid_alive, wait_until

ray = pytest.importorskip("ray", reason="gymfarm.ray needs the ray extra (pip install './python[ray]')")
from ray.cluster_utils import Cluster  # noqa: E402

import gymfarm  # noqa: E402

pytestmark = pytest.mark.timeout(600)
NODE_ARGS = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024}


def cli(*args, timeout=240):
    return subprocess.run([str(GYMFARM), "cluster", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_cluster_up_status_down(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "python"), str(SUPPORT)]))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS))
    path = tmp_path / "cluster.json"
    pids: list = []
    try:
        cluster.add_node(**NODE_ARGS)
        assert {n.node_ip_address for n in cluster.list_all_nodes()} == {"127.0.0.1"}  # all on loopback
        up = cli("up", "--address", cluster.address, "--workers-per-node", "2", "--file", str(path),
                 "--import", "gymfarm_testenvs", "--first-host", "127.0.0.2")
        assert up.returncode == 0, up.stdout + up.stderr
        doc = json.loads(path.read_text())
        assert sorted(e.rsplit(":", 1)[0] for e in doc["endpoints"]) == ["tcp://127.0.0.2", "tcp://127.0.0.3"]
        st = os.stat(doc["token_file"])
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        token = open(doc["token_file"]).read().strip()
        assert token not in path.read_text() and token not in up.stdout
        # CURVE: the keys a client needs, the client's secret in an owner-only file beside the token's
        curve = doc["curve"]
        st = os.stat(curve["secret_key_file"])
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        secret = open(curve["secret_key_file"]).read().strip()
        assert len(secret) == 40 and secret not in path.read_text() and secret not in up.stdout
        for ep in doc["endpoints"]:  # without the client key: no farm answers
            with pytest.raises(gymfarm.errors.FarmUnavailable):
                gymfarm.connect(ep, token=token, local=False, connect_timeout=2)
        with gymfarm.connect(str(path)) as farm:
            venv = farm.make_vec("CartPole-v1", num_envs=4)
            assert set(venv.endpoints) == set(doc["endpoints"])
            venv.reset(seed=0)
            venv.step(np.zeros(4, dtype=np.int64))
            venv.close()
        status = cli("status", "--address", cluster.address, "--file", str(path))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "2/2 farms live" in status.stdout
        pids = [int(line.split()[3]) for line in status.stdout.splitlines() if "tcp://127.0.0." in line]
        assert len(pids) == 2
        pids += [c for p in pids for c in children_of(p)]
        down = cli("down", "--address", cluster.address, "--file", str(path))
        assert down.returncode == 0, down.stdout + down.stderr
        assert not path.exists() and not os.path.exists(doc["token_file"])
        assert not os.path.exists(curve["secret_key_file"])
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 20), [p for p in pids if pid_alive(p)]
    finally:
        if path.exists():
            cli("down", "--address", cluster.address, "--file", str(path))
        cluster.shutdown()
        assert not any(pid_alive(p) for p in pids)
