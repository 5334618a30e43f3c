"""Finding 13 (seeds): a negative seed answered 500 (Gymnasium raises on it inside the worker).
Every route that takes a seed now answers the dialect's 400 for a seed Gymnasium would refuse
(negative, not an integer) or the farm cannot carry (above 2**64-1); Gymie closes with 1007
``Parameters `…` are wrong``. Seeds 0..2**64-1 still work."""
import json

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

BAD_SEEDS = [-1, -(2**63), 2**64, 1.5, "abc", True, [1], {"a": 1}]
BAD_STRING_SEEDS = ["-1", "1.5", "0x10", str(2**64)]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("seeds"), workers=4)
    yield f
    assert f.stop() == 0, f.log()


def base(url):
    return url.rstrip("/").removesuffix("/v1")


@pytest.fixture(scope="module")
def gym_iid(farm):
    r = requests.post(base(farm.gymnasium_url) + "/v1/envs/", json={"env_id": "CartPole-v1"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["instance_id"]


@pytest.mark.parametrize("seed", BAD_SEEDS + BAD_STRING_SEEDS)
def test_gymnasium_reset_seed_is_400(farm, gym_iid, seed):
    r = requests.post(base(farm.gymnasium_url) + f"/v1/envs/{gym_iid}/reset/", data=json.dumps({"seed": seed}),
                      timeout=60)
    assert r.status_code == 400 and "'seed'" in r.json()["message"], (seed, r.status_code, r.text)


@pytest.mark.parametrize("seed", BAD_SEEDS + BAD_STRING_SEEDS)
def test_gymnasium_episodes_seed_is_400(farm, gym_iid, seed):
    r = requests.post(base(farm.gymnasium_url) + f"/v1/envs/{gym_iid}/episodes/",
                      data=json.dumps({"count": 1, "seed": seed}),
                      timeout=60)
    assert r.status_code == 400 and "'seed'" in r.json()["message"], (seed, r.status_code, r.text)


@pytest.mark.parametrize("seed", BAD_SEEDS + ["7"])
def test_gym_http_api_create_seed_is_400(farm, seed):
    r = requests.post(base(farm.rest_url) + "/v1/envs/", data=json.dumps({"env_id": "CartPole-v1", "seed": seed}),
                      timeout=60)
    assert r.status_code == 400 and "'seed'" in r.json()["message"], (seed, r.status_code, r.text)


def test_good_seeds_still_work(farm, gym_iid):
    url = base(farm.gymnasium_url) + f"/v1/envs/{gym_iid}/reset/"
    for seed in (0, 1, "2718", " +5 ", 2**63 - 1, 2**63, 2**64 - 1):
        r = requests.post(url, data=json.dumps({"seed": seed}), timeout=60)
        assert r.status_code == 200, (seed, r.text)
    a = requests.post(url, json={"seed": 2**64 - 1}, timeout=60).json()
    b = requests.post(url, json={"seed": str(2**64 - 1)}, timeout=60).json()
    assert a == b
    r = requests.post(base(farm.rest_url) + "/v1/envs/", json={"env_id": "CartPole-v1", "seed": 2**64 - 1}, timeout=60)
    assert r.status_code == 200, r.text
    iid = r.json()["instance_id"]
    assert requests.post(base(farm.rest_url) + f"/v1/envs/{iid}/reset/", timeout=60).status_code == 200
    requests.post(base(farm.rest_url) + f"/v1/envs/{iid}/close/", timeout=60)


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64, 1.5, "7", True])
def test_gymie_make_bad_seed_closes_1007(farm, seed):
    with ws_connect(farm.gymie_url, open_timeout=10) as ws:
        params = {"env_id": "CartPole-v1", "seed": seed}
        ws.send(json.dumps({"method": "make", "params": params}))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
    assert e.value.rcvd.code == 1007 and e.value.rcvd.reason.startswith("Parameters `"), e.value.rcvd


def test_gymie_make_big_seed_resets(farm):
    with ws_connect(farm.gymie_url, open_timeout=10) as ws:
        ws.send(json.dumps({"method": "make", "params": {"env_id": "CartPole-v1", "seed": 2**64 - 1}}))
        iid = ws.recv(timeout=30)
        ws.send(json.dumps({"method": "reset", "params": {"instance_id": iid}}))
        assert len(json.loads(ws.recv(timeout=30))) == 4
        ws.send(json.dumps({"method": "close", "params": {"instance_id": iid}}))
        assert ws.recv(timeout=30) == "true"
