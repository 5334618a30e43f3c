"""gymnasium-http-api dialect conformance (docs/protocols.md §3.1, §5.3) on its own port."""
import base64
import json
import re
import zlib

import numpy as np
import pytest
import requests

from farm_fixture import FarmProcess


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    f = FarmProcess(tmp_path_factory.mktemp("gymnasium"), workers=8)
    yield f
    assert f.stop() == 0


class G:
    def __init__(self, url):
        self.base = url.rstrip("/").removesuffix("/v1")
        self.s = requests.Session()
        self.made = []

    def post(self, route, data=None):
        return self.s.post(self.base + route, data=json.dumps(data), headers={"Content-Type": "application/json"})

    def get(self, route):
        return self.s.get(self.base + route)

    def make(self, env_id, **kw):
        r = self.post("/v1/envs/", dict(env_id=env_id, **kw))
        assert r.status_code == 200, r.text
        iid = r.json()["instance_id"]
        self.made.append(iid)
        return iid


@pytest.fixture
def g(farm):
    c = G(farm.gymnasium_url)
    yield c
    for iid in c.made:
        c.s.delete(c.base + f"/v1/envs/{iid}/")


def decode(obs):
    raw = zlib.decompress(base64.b64decode(obs["data"]))
    return np.frombuffer(raw, dtype=np.dtype(obs["type"]))


def test_n1_make_with_options_and_kwargs(g):
    iid = g.make("CartPole-v1", max_episode_steps=None, auto_reset=None, disable_env_checker=None, kwargs={})
    assert re.match(r"^[0-9a-f]{8}$", iid)
    lake = g.make("FrozenLake-v1",
                  kwargs={"render_mode": "ansi", "is_slippery": False, "desc": ["SFFF", "FFFF", "FFFF", "HFFG"]})
    g.post(f"/v1/envs/{lake}/reset/", {"seed": ""})
    assert g.get(f"/v1/envs/{lake}/render/").json()["render_frame"].startswith("\n\x1b[41mS\x1b[0mFFF\nFFFF")


def test_n2_env_info(g):
    iid = g.make("CartPole-v1")
    assert g.get(f"/v1/envs/{iid}/").json() == {"id": "CartPole-v1"}


def test_n3_reset_encoding_and_seeds(g):
    iid = g.make("CartPole-v1")
    obs = g.post(f"/v1/envs/{iid}/reset/", {"seed": ""}).json()["observation"]
    assert obs["type"] == "float64" and len(zlib.decompress(base64.b64decode(obs["data"]))) == 32
    a = g.post(f"/v1/envs/{iid}/reset/", {"seed": 2718}).json()
    b = g.post(f"/v1/envs/{iid}/reset/", {"seed": "2718"}).json()
    assert a == b
    r = g.s.post(g.base + f"/v1/envs/{iid}/reset/", data="null", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"message": "Request is not a valid json"})


def test_n4_step_five_tuple(g):
    iid = g.make("CartPole-v1")
    g.post(f"/v1/envs/{iid}/reset/", {})
    r = g.post(f"/v1/envs/{iid}/step/", {"action": 1}).json()
    assert sorted(r) == ["info", "observation", "reward", "terminated", "truncated"]
    assert r["reward"] == 1.0 and isinstance(r["terminated"], bool) and isinstance(r["truncated"], bool)
    assert len(decode(r["observation"])) == 4


def test_n5_dtypes(g):
    lake = g.make("FrozenLake-v1")
    obs = g.post(f"/v1/envs/{lake}/reset/", {"seed": 1}).json()["observation"]
    assert obs["type"] == "int64" and decode(obs).tolist() == [0]
    mb = g.make("gymfarm_test/MultiDiscrete-v0")
    assert g.post(f"/v1/envs/{mb}/reset/", {"seed": 1}).json()["observation"]["type"] == "int64"  # int32 widened
    tup = g.make("gymfarm_test/TupleObs-v0")
    obs = g.post(f"/v1/envs/{tup}/reset/", {"seed": 1}).json()["observation"]
    assert obs["type"] == "int64" and len(decode(obs)) == 1  # a tuple keeps element 0, as the original


def test_n6_sample_contains(g):
    iid = g.make("CartPole-v1")
    assert g.get(f"/v1/envs/{iid}/action_space/sample/").json()["action"] in (0, 1)
    assert g.get(f"/v1/envs/{iid}/action_space/contains/2/").json() == {"member": False}
    assert g.get(f"/v1/envs/{iid}/action_space/contains/1/").json() == {"member": True}
    assert g.post(f"/v1/envs/{iid}/observation_space/contains/", {"name": "Box"}).json() == {"member": True}


def test_n7_infinite_bounds_are_float64_max(g):
    iid = g.make("CartPole-v1")
    text = g.get(f"/v1/envs/{iid}/observation_space/").text
    assert "1.7976931348623157e+308" in text and "-1.7976931348623157e+308" in text


def test_n8_transitions(g):
    iid = g.make("FrozenLake-v1")
    p = g.get(f"/v1/envs/{iid}/transitions/").json()["transitions"]
    assert sorted(p, key=int) == [str(i) for i in range(16)]
    assert all(sorted(p[s]) == ["0", "1", "2", "3"] for s in p)
    prob, nxt, reward, done = p["14"]["2"][1]
    assert 0 < prob <= 1 and isinstance(nxt, int) and isinstance(done, bool)


def test_n9_episodes(g):
    iid = g.make("FrozenLake-v1", kwargs={"desc": ["SFFF", "FFFF", "FFFF", "HFFG"]})
    eps = g.post(f"/v1/envs/{iid}/episodes/", {"count": 10, "seed": 2718}).json()["episodes"]
    assert len(eps) == 10
    assert all(ep[0]["r"] == 0.0 and decode(ep[0]["s"]).tolist() == [0] for ep in eps)


def test_n10_render_rgb(g):
    iid = g.make("MountainCar-v0", kwargs={"render_mode": "rgb_array"})
    g.post(f"/v1/envs/{iid}/reset/", {"seed": 0})
    f = g.get(f"/v1/envs/{iid}/render/").json()["render_frame"]
    raw = zlib.decompress(base64.b64decode(f["data"]))
    assert (f["rows"], f["cols"], len(raw)) == (400, 600, 960000)
    assert raw[3] == 255  # the alpha channel added


def test_n11_delete(g):
    iid = g.make("CartPole-v1")
    r = g.s.delete(g.base + f"/v1/envs/{iid}/")
    assert (r.status_code, r.text) == (200, "")
    r = g.s.delete(g.base + f"/v1/envs/{iid}/")
    assert r.status_code == 400 and "Instance_id" in r.json()["message"]


def test_n12_rust_e2e_flow(g):
    iid = g.make("FrozenLake-v1", max_episode_steps=1,
                 kwargs={"render_mode": "ansi", "is_slippery": False, "desc": ["SFFF", "FFFF", "FFFF", "HFFG"]})
    obs = g.post(f"/v1/envs/{iid}/reset/", {"seed": 2718}).json()["observation"]
    start = decode(obs).tolist()[0]
    r = g.post(f"/v1/envs/{iid}/step/", {"action": 1}).json()
    assert decode(r["observation"]).tolist() == [start + 4]
    assert r["truncated"] is True  # max_episode_steps=1 reached


def test_errors_and_routes_of_this_dialect(g):
    for route in ("/v1/envs/bad_id/", "/v1/envs/bad_id/action_space/", "/v1/envs/bad_id/observation_space/"):
        r = g.get(route)
        assert r.status_code == 400 and "Instance_id" in r.json()["message"]
    assert g.post("/v1/envs/", {}).json()["message"] == "A required request parameter 'env_id' was not provided"
    assert "malformed environment ID" in g.post("/v1/envs/", {"env_id": "bad string"}).json()["message"]
    iid = g.make("CartPole-v1")
    assert "'action'" in g.post(f"/v1/envs/{iid}/step/", {}).json()["message"]
    assert g.post(f"/v1/envs/{iid}/monitor/start/", {"directory": "x"}).status_code == 404  # not in this dialect
    assert g.get("/v1/help").json()["v1"]["/v1/envs/{instance_id}/transitions/"]["methods"] == "GET"
