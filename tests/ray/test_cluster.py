"""gymfarm.ray on a real Ray cluster of three nodes on this machine (ray.cluster_utils.Cluster),
each node's farm on its own loopback address (127.0.0.2, 127.0.0.3, ...). Each test starts and
shuts down its own Ray cluster and farms, and checks by pid that no farm process is left."""
import os
import signal
import time
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import pytest

from farm_fixture import GYMFARM, ROOT, SUPPORT, children_of, pid_alive, wait_until

ray = pytest.importorskip("ray", reason="gymfarm.ray needs the ray extra (pip install './python[ray]')")
from ray.cluster_utils import Cluster  # noqa: E402

import gymfarm  # noqa: E402
import gymfarm.ray  # noqa: E402
from gymfarm.errors import FarmLost, FarmUnavailable, Unauthorized  # noqa: E402

pytestmark = pytest.mark.timeout(600)
NODE_ARGS = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024}


@contextmanager
def ray_cluster(monkeypatch, nodes=3):
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1, driver connected; torn down after."""
    # the Ray workers import this checkout's gymfarm and the test envs
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "python"), str(SUPPORT)]))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS))
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**NODE_ARGS)
        ray.init(address=cluster.address, log_to_driver=False)
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}  # all on loopback
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def farm_cluster(**kw):
    return gymfarm.ray.FarmCluster(
        workers_per_node=kw.pop("workers_per_node", 4), host_for_node=lambda i, node: f"127.0.0.{2 + i}",
        farm_args=["--import", "gymfarm_testenvs"], env={"PYTHONPATH": str(SUPPORT)}, gymfarm_bin=str(GYMFARM),
        poll_s=0.5, **kw)


def farm_processes(fc):
    """Every farm process of the cluster: brokers, their zygotes and workers."""
    pids = [f["pid"] for f in fc.farms() if f["pid"]]
    return pids + [c for p in pids for c in children_of(p)]


def shutdown_leaves_nothing(fc, also=()):
    pids = set(farm_processes(fc)) | set(also)
    assert pids
    fc.shutdown()
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 20), \
        [p for p in pids if pid_alive(p)]


def test_a_cluster_of_three_farms_serves_one_vector_env_and_stops_clean(monkeypatch):
    with ray_cluster(monkeypatch, nodes=3):
        fc = farm_cluster()
        try:
            assert sorted(e.split(":")[1] for e in fc.endpoints) == ["//127.0.0.2", "//127.0.0.3", "//127.0.0.4"]
            with gymfarm.connect(fc) as farm:
                venv = farm.make_vec("CartPole-v1", num_envs=12)
                assert sorted(venv.endpoints.count(e) for e in fc.endpoints) == [4, 4, 4]
                ref = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 12)
                obs, _ = venv.reset(seed=11)
                assert np.array_equal(obs, ref.reset(seed=11)[0])
                rng = np.random.default_rng(2)
                for _ in range(60):
                    a = rng.integers(0, 2, size=12)
                    got, want = venv.step(a), ref.step(a)
                    for x, y in zip(got[:4], want[:4], strict=True):
                        assert np.array_equal(x, y)
                stats = farm.stats()
                assert stats["instances"] == 12 and len(stats["farms"]) == 3
                venv.close()
            keys = fc.client_curve
            assert keys is not None  # CURVE is on by default
            for ep in fc.endpoints:
                # without the cluster's CURVE key: no answer at all, within the connect timeout
                t0 = time.monotonic()
                with pytest.raises(FarmUnavailable):
                    gymfarm.connect(ep, token=fc.token, local=False, connect_timeout=2)
                assert time.monotonic() - t0 < 8
                # with it, the cluster's token is still on: no token, no service
                with pytest.raises(Unauthorized):
                    gymfarm.connect(ep, token="", local=False, curve=keys).make("CartPole-v1")
                with pytest.raises(Unauthorized):
                    gymfarm.connect(ep, token="0" * 32, curve=keys).make("CartPole-v1")
            # neither the token nor a secret key is in any farm's command line
            for pid in farm_processes(fc):
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
                assert fc.token.encode() not in cmdline
                assert keys["secret_key"].encode() not in cmdline
                assert fc._farm_curve["secret_key"].encode() not in cmdline
            # an actor killed takes its farm with it, and Ray restarts both
            victim = fc.farms()[0]
            old = set(farm_processes(fc))
            os.kill(victim["actor_pid"], signal.SIGKILL)
            assert wait_until(lambda: not pid_alive(victim["pid"]), 10)
            assert fc.wait_for(lambda c: any(f["host"] == victim["host"] and f["restarted"] and f["endpoint"]
                                             and f["endpoint"] != victim["endpoint"] for f in c.farms()), 60)
            with gymfarm.connect(fc) as farm:
                assert len(farm.endpoints) == 3
                farm.make("CartPole-v1").reset(seed=0)
        finally:
            shutdown_leaves_nothing(fc, old if "old" in locals() else ())


def test_a_lost_node_and_a_killed_farm_fail_only_their_envs_and_come_back(monkeypatch):
    with ray_cluster(monkeypatch, nodes=3) as cluster:
        fc = farm_cluster(workers_per_node=3)
        seen = set(farm_processes(fc))
        try:
            farm = gymfarm.connect(fc)
            venv = farm.make_vec("CartPole-v1", num_envs=9)
            venv.reset(seed=0)
            for _ in range(3):
                venv.step(np.zeros(9, dtype=np.int64))
            # the node that leaves is not the head (the driver is connected to it)
            farms = sorted(fc.farms(), key=lambda f: f["node_id"] == cluster.head_node.node_id)
            gone, killed, kept = farms[0], farms[1], farms[2]
            by_host = {f["host"]: f for f in farms}
            rows = {h: [i for i, ep in enumerate(venv.endpoints) if ep == by_host[h]["endpoint"]] for h in by_host}
            node = next(n for n in cluster.list_all_nodes() if n.node_id == gone["node_id"])
            cluster.remove_node(node)  # a node leaves mid-run
            os.kill(killed["pid"], signal.SIGKILL)  # and another node's broker is killed
            t0 = time.monotonic()
            lost: set = set()
            for _ in range(200):
                try:
                    venv.step(np.zeros(9, dtype=np.int64))
                except FarmLost as e:
                    lost = {i for i, r in enumerate(e.results) if isinstance(r, FarmLost)}
                    assert all(isinstance(e.results[i], dict) for i in rows[kept["host"]])
                    if lost == set(rows[killed["host"]]) | set(rows[gone["host"]]):
                        break
                time.sleep(0.02)
            assert lost == set(rows[killed["host"]]) | set(rows[gone["host"]])
            assert time.monotonic() - t0 < 10.0  # within the lease
            # Ray restarts the killed farm (a new endpoint); the removed node's farm is dropped
            live = {kept["host"], killed["host"]}
            seen_restarted: dict = {}

            def restarted_and_live(c):  # judged on one snapshot of the farms, which the monitor updates
                farms_now = c.farms()
                again = [f for f in farms_now if f["host"] == killed["host"] and f["endpoint"]]
                if ({f["host"] for f in farms_now if f["endpoint"]} == live and again
                        and all(f["endpoint"] != killed["endpoint"] for f in farms_now) and again[0]["restarted"]):
                    seen_restarted.update(again[0])
                    return True
                return False

            assert fc.wait_for(restarted_and_live, 90), fc.farms()
            restarted = seen_restarted
            assert restarted["restarted"] and restarted["pid"] != killed["pid"]
            seen |= set(farm_processes(fc))
            # new makes succeed, on the live farms only: the restarted one is the least loaded
            env = farm.make("CartPole-v1")
            assert env.farm.endpoint == restarted["endpoint"]
            env.reset(seed=0)
            again = farm.make_vec("CartPole-v1", num_envs=2)
            assert set(again.endpoints) <= {kept["endpoint"], restarted["endpoint"]}
            again.close()
            # a node that joins gets a farm
            cluster.add_node(**NODE_ARGS)
            assert fc.wait_for(lambda c: len(c.endpoints) == 3, 90), fc.farms()
            assert "127.0.0.5" in {f["host"] for f in fc.farms() if f["endpoint"]}
            seen |= set(farm_processes(fc))
            venv.close()
            farm.close()
        finally:
            shutdown_leaves_nothing(fc, seen)


def test_a_farm_whose_first_start_fails_is_started_again(monkeypatch, tmp_path):
    # a gymfarm that fails its first start on the node and works from then on
    marker = tmp_path / "failed-once"
    flaky = tmp_path / "gymfarm"
    flaky.write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then touch {marker}; exit 1; fi\nexec {GYMFARM} \"$@\"\n")
    flaky.chmod(0o700)
    with ray_cluster(monkeypatch, nodes=1):
        fc = gymfarm.ray.FarmCluster(workers_per_node=1, host_for_node=lambda i, node: "127.0.0.2",
                                     farm_args=["--import", "gymfarm_testenvs"], env={"PYTHONPATH": str(SUPPORT)},
                                     gymfarm_bin=str(flaky), poll_s=0.5, start_timeout=5, retry_start_after=2)
        try:
            assert fc.wait_for(lambda c: marker.exists(), 60)  # its first start ran (and failed)
            assert fc.wait_for(lambda c: len(c.endpoints) == 1, 60), fc.farms()
            with gymfarm.connect(fc) as farm:
                farm.make("CartPole-v1").reset(seed=0)
        finally:
            shutdown_leaves_nothing(fc)
