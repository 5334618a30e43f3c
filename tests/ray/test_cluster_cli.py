"""`gymfarm cluster up|status|down` on a two-node Ray cluster on this machine: the cluster file
that gymfarm.connect(PATH) reads, an owner-only token file, and nothing left after `down`."""
import json
import os
import signal
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
            assert ray.is_initialized()  # it asked the cluster's manager for the live farms
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
        ray.shutdown()  # connect(PATH) made this process a driver of the cluster
        cluster.shutdown()
        assert not any(pid_alive(p) for p in pids)


def status_pids(path, address):
    """(endpoint, broker pid) of each live farm, as `gymfarm cluster status` lists them."""
    status = cli("status", "--address", address, "--file", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    return sorted((line.split()[2], int(line.split()[3])) for line in status.stdout.splitlines()
                  if "tcp://127.0.0." in line)


def test_a_client_from_the_file_follows_the_cluster_and_a_restarted_manager_adopts_the_farms(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "python"), str(SUPPORT)]))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS))
    path = tmp_path / "cluster.json"
    pids: set = set()
    try:
        cluster.add_node(**NODE_ARGS)
        up = cli("up", "--address", cluster.address, "--workers-per-node", "1", "--file", str(path),
                 "--import", "gymfarm_testenvs", "--first-host", "127.0.0.2")
        assert up.returncode == 0, up.stdout + up.stderr
        first = json.loads(path.read_text())["endpoints"]
        assert len(first) == 2
        # the file names the Ray cluster: the client asks the manager (and becomes a Ray driver)
        farm = gymfarm.connect(str(path), refresh_s=0.5)
        assert ray.is_initialized() and sorted(farm.endpoints) == sorted(first)
        mgr = ray.get_actor("gymfarm-cluster", namespace="gymfarm")
        live = lambda: sorted(ray.get(mgr.endpoints.remote(), timeout=30))  # noqa: E731
        venv = farm.make_vec("CartPole-v1", num_envs=2)  # one env on each farm
        assert sorted(venv.endpoints) == sorted(first)
        venv.reset(seed=0)
        nodes = [f["node_id"] for f in ray.get(mgr.farms.remote())]
        # kill -9 one farm's broker: Ray restarts its actor, which starts a farm on a new port
        victim = next(f for f in ray.get(mgr.farms.remote()) if f["endpoint"] == first[0])
        pids |= {victim["pid"], *children_of(victim["pid"])}
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_until(lambda: len(live()) == 2 and first[0] not in live(), 90, interval=0.5), live()
        restarted = next(e for e in live() if e not in first)
        assert restarted.rsplit(":", 1)[0] == first[0].rsplit(":", 1)[0]  # the same node's address
        assert json.loads(path.read_text())["endpoints"] == first  # the file is stale ...
        with gymfarm.connect(str(path)) as fresh:  # ... and a client made from it now follows the cluster
            assert sorted(fresh.endpoints) == live()
            env = fresh.make("CartPole-v1")  # the restarted farm is the least loaded (the other holds an env)
            assert env.farm.endpoint == restarted
            env.reset(seed=0)
            env.step(0)
        # the older client finds the restarted farm too (its list is refreshed)
        assert wait_until(lambda: restarted in farm.endpoints, 10, interval=0.2), farm.endpoints
        farm.make("CartPole-v1").reset(seed=1)
        # a node joins: its farm is in a client from the file
        cluster.add_node(**NODE_ARGS)
        assert wait_until(lambda: len(live()) == 3, 120, interval=0.5), live()
        with gymfarm.connect(str(path)) as fresh:
            assert sorted(fresh.endpoints) == live()
            assert "tcp://127.0.0.4" in {e.rsplit(":", 1)[0] for e in fresh.endpoints}
            assert {e.rsplit(":", 1)[0] for e in fresh.make_vec("CartPole-v1", num_envs=3).endpoints} \
                == {e.rsplit(":", 1)[0] for e in live()}
        assert wait_until(lambda: len(farm.endpoints) == 3, 10, interval=0.2), farm.endpoints
        venv.close()
        farm.close()
        # status rewrites the file with the live list
        before = status_pids(path, cluster.address)
        assert sorted(json.loads(path.read_text())["endpoints"]) == live() == [e for e, _ in before]
        pids |= {p for _, p in before} | {c for _, p in before for c in children_of(p)}
        # the manager dies: Ray restarts it, and it adopts the running farms (the same pids)
        ray.kill(mgr, no_restart=False)
        assert wait_until(lambda: _restarted(), 120, interval=0.5)
        assert status_pids(path, cluster.address) == before
        assert all(pid_alive(p) for _, p in before)
        with gymfarm.connect(str(path)) as fresh:
            fresh.make("CartPole-v1").reset(seed=2)
        down = cli("down", "--address", cluster.address, "--file", str(path))
        assert down.returncode == 0, down.stdout + down.stderr
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 30), [p for p in pids if pid_alive(p)]
        assert wait_until(lambda: not any(_farm_actor(n) for n in nodes), 30)  # no farm actor is left
    finally:
        if path.exists():
            cli("down", "--address", cluster.address, "--file", str(path))
        ray.shutdown()
        cluster.shutdown()
        assert not any(pid_alive(p) for p in pids)


def _restarted():
    try:
        return ray.get(ray.get_actor("gymfarm-cluster", namespace="gymfarm").restarted.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - restarting
        return False


def _farm_actor(node_id):
    try:
        return ray.get_actor(f"gymfarm-cluster-farm-{node_id}", namespace="gymfarm")
    except ValueError:
        return None
