"""Finding 9, unbounded work: POST /v1/envs/ID/episodes/ took any count up to 10000 (up to 10^9
steps), and went on after the client left. Now `count` is at most 100 (400 above it), a request
plays at most 100,000 steps and 64 MiB of episodes in all, and the loop stops when the client goes
(docs/dialects.md)."""
import json
import socket
import time

import pytest
import requests

from farm_fixture import wait_until


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("episodes"), workers=3)
    yield f
    assert f.stop() == 0, f.log()


def make(farm, env_id):
    base = farm.gymnasium_url.rstrip("/").removesuffix("/v1")
    r = requests.post(base + "/v1/envs/", json={"env_id": env_id}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["instance_id"]


def episodes_url(farm, iid):
    return farm.gymnasium_url.rstrip("/").removesuffix("/v1") + f"/v1/envs/{iid}/episodes/"


def total_steps(native) -> int:
    return sum(int(w["steps"]) for w in native.stats()["workers"])


@pytest.mark.parametrize("count", [101, 1000, 10000, "101", -1, "abc", 1.5])
def test_count_above_the_cap_is_400(farm, count):
    iid = make(farm, "CartPole-v1")
    with farm.connect() as native:
        before = total_steps(native)
        r = requests.post(episodes_url(farm, iid), json={"count": count}, timeout=60)
        assert r.status_code == 400 and "'count'" in r.json()["message"], r.text
        assert total_steps(native) == before  # refused before any work
    requests.delete(episodes_url(farm, iid).removesuffix("episodes/"), timeout=30)


def test_count_at_the_cap_is_served(farm):
    iid = make(farm, "CartPole-v1")
    r = requests.post(episodes_url(farm, iid), json={"count": 100, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    episodes = r.json()["episodes"]
    assert len(episodes) == 100 and all(ep[0]["r"] == 0.0 for ep in episodes)
    assert "Gymfarm-Episodes-Cut" not in r.headers
    requests.delete(episodes_url(farm, iid).removesuffix("episodes/"), timeout=30)


def test_a_client_that_leaves_stops_the_work(farm):
    # MountainCar under random actions almost never terminates and the dialect ignores truncation,
    # so 100 episodes would run to the 100,000-step budget: far longer than this test waits.
    iid = make(farm, "MountainCar-v0")
    url = episodes_url(farm, iid)
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    body = json.dumps({"count": 100})
    with farm.connect() as native:
        before = total_steps(native)
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        assert wait_until(lambda: total_steps(native) - before > 200, 30), "the episodes did not start"
        s.close()  # the client goes
        time.sleep(1.0)  # the loop notices within a step
        settled = total_steps(native)
        time.sleep(2.0)
        grown = total_steps(native) - settled
        assert grown <= 5, f"the episodes went on after the client left: {grown} more steps in 2 s"
        assert settled - before < 100000
