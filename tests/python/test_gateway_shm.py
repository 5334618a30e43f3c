"""The gateway is a local client too (docs/protocol.md "Shared memory"): instances made through
gym-http-api and Gymie get slabs, their steps reach the worker without the broker, and every
reply is the one the socket path gives (a farm with --shm-slab-kb 0)."""
import json
import time

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
