"""The gateway is a local client too (docs/protocol.md "Shared memory"): instances made through
gym-http-api and Gymie get slabs, their steps reach the worker without the broker, and every
reply is the one the socket path gives (a farm with --shm-slab-kb 0)."""
import functools
import json
import os
import signal
import time

import pytest
import requests
from websockets.sync.client import connect

from farm_fixture import wait_until


def answered(stats, verb):
    """How many requests with this verb the broker has answered."""
    return sum((stats["answers"].get(verb) or {}).get("codes", {}).values())


def rest_episode(fp, steps=40):
    """A seeded gym-http-api episode: every reply's JSON, in order."""
    base = fp.rest_url
    # gym-http-api seeds an env when it makes it
    made = requests.post(base + "envs/", json={"env_id": "CartPole-v1", "seed": 3}, timeout=30)
    iid = made.json()["instance_id"]
    out = [requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30).json()]
    for i in range(steps):
        r = requests.post(base + f"envs/{iid}/step/", json={"action": i % 2}, timeout=30).json()
        out.append(r)
        if r["done"]:
            out.append(requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30).json())
    bad = requests.post(base + f"envs/{iid}/step/", json={"action": 9}, timeout=30)  # the env's own error
    out.append((bad.status_code, bad.json()))
    return iid, out


def gymie_episode(fp, steps=40):
    ws = connect(fp.gymie_url, open_timeout=10, close_timeout=5)
    try:
        def send(method, **params):
            ws.send(json.dumps({"method": method, "params": params}))
            return ws.recv(timeout=30)

        iid = send("make", env_id="CartPole-v1", seed=5)  # Gymie answers the bare id
        out = [send("reset", instance_id=iid)]
        for i in range(steps):
            out.append(send("step", instance_id=iid, action=i % 2))
        return out
    finally:
        ws.close()


def test_rest_and_gymie_steps_go_through_slabs_with_the_socket_paths_replies(start_farm):
    with_slabs = start_farm(workers=2)
    without = start_farm(workers=2, args=["--shm-slab-kb", "0"])
    farm = with_slabs.connect(shm=False)
    before = farm.stats()
    iid, got = rest_episode(with_slabs)
    after = farm.stats()
    # the episode's resets and steps (the bad action's error too: the env raised it) went through
    # the slab; the broker saw the make
    assert after["shm"]["answered"] - before["shm"]["answered"] >= 41
    # not one step or reset reached the broker (the gateway's new pool threads' hellos may)
    for v in ("step", "reset"):
        assert answered(after, v) == answered(before, v), (v, answered(before, v), answered(after, v))
    _, expected = rest_episode(without)
    assert got == expected
    assert without.connect().stats()["shm"] == {"slabs": 0, "answered": 0}
    # Gymie replies are the same frames through the slab as over the socket
    assert gymie_episode(with_slabs) == gymie_episode(without)
    # closing the REST instance lets its slab go
    requests.post(with_slabs.rest_url + f"envs/{iid}/close/", timeout=30)
    assert wait_until(lambda: farm.stats()["shm"]["slabs"] == 0, 10)


def test_a_rest_instance_stepped_through_its_slab_is_not_idle(start_farm):
    fp = start_farm(workers=2, args=["--idle-ttl", "1"])
    base = fp.rest_url
    iid = requests.post(base + "envs/", json={"env_id": "CartPole-v1"}, timeout=30).json()["instance_id"]
    requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30)
    farm = fp.connect(shm=False)
    for _ in range(25):  # 2.5 s of steps through the slab, past the 1 s ttl
        r = requests.post(base + f"envs/{iid}/step/", json={"action": 0}, timeout=30)
        assert r.status_code == 200, r.text
        if r.json()["done"]:
            requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30)
        time.sleep(0.1)
    assert farm.stats()["shm"]["slabs"] == 1
    # once it is left alone the ttl closes it, and its id answers as the peers' servers did
    assert wait_until(lambda: farm.stats()["shm"]["slabs"] == 0, 10)
    r = requests.post(base + f"envs/{iid}/step/", json={"action": 0}, timeout=30)
    assert r.status_code == 400 and "unknown" in r.json()["message"].lower()


def gateway_steps(fp):
    """gymfarm_gateway_steps_total by where they finished (docs/architecture.md)."""
    text = requests.get(fp.rest_url.rstrip("/").rsplit("/v1", 1)[0] + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("gymfarm_gateway_steps_total{"):
            out[line.split('finished="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def warm(send, iid, fp, batches=15, steps=20):
    """Steps `iid` in back-to-back batches until most of a batch's steps were tried on the gateway's
    I/O thread (answered there, or handed to the pool): only while the worker's recent steps were
    quick. A step after an idle gap (a scrape of /metrics) runs cold and slowly, so the scrapes
    come between batches; on a loaded machine it takes more of them."""
    def tried():
        counts = gateway_steps(fp)
        return counts["io_thread"] + counts["pool"]

    for _ in range(batches):
        before = tried()
        for i in range(steps):
            if json.loads(send("step", instance_id=iid, action=i % 2))[2]:
                send("reset", instance_id=iid)
        if tried() - before >= steps // 2:
            return
    pytest.fail(f"no batch of {steps} steps of {iid} was mostly tried on the I/O thread in {batches}")


def stop_under_a_handed_over_step(ws, send, iid, pid, fp, tries=10):
    """SIGSTOPs `pid` (the worker of `iid`) and sends a step that the gateway's I/O thread tries,
    gets no answer to in time and hands to its pool. A step the gateway sends straight to its pool
    instead (the worker's latest step was slow: a loaded machine) is let finish and tried again."""
    for _ in range(tries):
        warm(send, iid, fp)
        before = gateway_steps(fp)["pool"]
        os.kill(pid, signal.SIGSTOP)
        ws.send(json.dumps({"method": "step", "params": {"instance_id": iid, "action": 1}}))
        if wait_until(lambda b=before: gateway_steps(fp)["pool"] > b, 2):
            return
        os.kill(pid, signal.SIGCONT)
        if json.loads(ws.recv(timeout=30))[2]:
            send("reset", instance_id=iid)
    pytest.fail(f"no step of {iid} was handed from the I/O thread to the pool in {tries} tries")


def test_quick_steps_are_answered_on_the_io_thread_and_slow_ones_are_not(start_farm):
    fp = start_farm(workers=2)
    base = fp.rest_url
    # CartPole's steps take a few microseconds in the worker: the I/O thread answers most of a
    # round's 120. Not every round on a loaded machine: a descheduled worker's slow steps keep the
    # next ones off the I/O thread, so a round is tried again, a bounded number of times.
    rounds = []
    for _ in range(6):
        before = gateway_steps(fp)
        rest_episode(fp, steps=60)
        gymie_episode(fp, steps=60)
        after = gateway_steps(fp)
        rounds.append((after["io_thread"] - before["io_thread"], after["pool"] - before["pool"]))
        if rounds[-1][0] >= 60:
            break
    assert rounds[-1][0] >= 60, f"steps answered on the I/O thread and handed over, by round: {rounds}"
    # a half-millisecond env's steps leave the I/O thread (after the first, whose time is unknown)
    iid = requests.post(base + "envs/", json={"env_id": "gymfarm_test/Heavy-v0"}, timeout=30).json()["instance_id"]
    requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30)
    mid = gateway_steps(fp)
    for _ in range(30):
        assert requests.post(base + f"envs/{iid}/step/", json={"action": 0}, timeout=30).status_code == 200
    end = gateway_steps(fp)
    assert end["io_thread"] - mid["io_thread"] <= 2 and end["pool"] - mid["pool"] <= 2, (mid, end)


def test_a_stopped_env_does_not_hold_the_gateways_io_thread(start_farm):
    """A step the worker does not answer within the I/O thread's budget is finished on the pool:
    meanwhile other connections are served, and the step's reply comes once the worker goes on."""
    fp = start_farm(workers=3)
    farm = fp.connect(shm=False)
    stuck = connect(fp.gymie_url, open_timeout=10, close_timeout=5)
    other = connect(fp.gymie_url, open_timeout=10, close_timeout=5)
    try:
        def send(ws, method, **params):
            ws.send(json.dumps({"method": method, "params": params}))
            return ws.recv(timeout=30)

        a = send(stuck, "make", env_id="CartPole-v1")
        send(stuck, "reset", instance_id=a)
        b = send(other, "make", env_id="CartPole-v1")
        send(other, "reset", instance_id=b)
        pid = next(w for w in farm.stats()["workers"] if w.get("instance") == a)["pid"]
        try:
            stop_under_a_handed_over_step(stuck, functools.partial(send, stuck), a, pid, fp)
            t = time.monotonic()
            for i in range(20):
                send(other, "step", instance_id=b, action=i % 2)
            assert time.monotonic() - t < 5
            with pytest.raises(TimeoutError):  # not answered while its worker is stopped
                stuck.recv(timeout=0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        obs, reward, done, info = json.loads(stuck.recv(timeout=30))
        assert len(obs) == 4 and reward == 1.0
    finally:
        stuck.close()
        other.close()


def test_a_worker_killed_under_a_handed_over_step_answers_with_gymies_error(start_farm):
    """kill -9 of a worker whose step the I/O thread handed to the pool: the connection gets the
    crash as Gymie's close (1007), not a hang, and the gateway goes on serving."""
    from websockets.exceptions import ConnectionClosed

    fp = start_farm(workers=3)
    farm = fp.connect(shm=False)
    base = fp.rest_url
    iid = requests.post(base + "envs/", json={"env_id": "CartPole-v1"}, timeout=30).json()["instance_id"]
    requests.post(base + f"envs/{iid}/reset/", json={}, timeout=30)
    for _ in range(5):
        requests.post(base + f"envs/{iid}/step/", json={"action": 0}, timeout=30)
    ws = connect(fp.gymie_url, open_timeout=10, close_timeout=5)
    try:
        def send(method, **params):
            ws.send(json.dumps({"method": method, "params": params}))
            return ws.recv(timeout=30)

        a = send("make", env_id="CartPole-v1")
        send("reset", instance_id=a)
        pid = next(w for w in farm.stats()["workers"] if w.get("instance") == a)["pid"]
        stop_under_a_handed_over_step(ws, send, a, pid, fp)
        os.kill(pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            answer = ws.recv(timeout=30)
        except ConnectionClosed as e:
            answer = (e.rcvd.code, e.rcvd.reason)
        assert time.monotonic() - t < 20
        # Gymie closes with 1007 for an error of the farm's: an instance whose worker crashed
        assert isinstance(answer, tuple) and answer[0] == 1007, answer
    finally:
        ws.close()
    # the REST instance on another worker still steps
    r = requests.post(base + f"envs/{iid}/step/", json={"action": 0}, timeout=30)
    assert r.status_code == 200, r.text
