"""gym-http-api conformance (docs/protocols.md §2, §5.2) against a real farm: the 16 behaviours of
the original tests/test_api.py, written as the project's own tests, and the R-* cases."""
import http.client
import json
import re
import socket
import threading

import pytest
import requests

from farm_fixture import FarmProcess, pid_alive, wait_until


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest")
    f = FarmProcess(tmp, workers=14, args=["--monitor-dir", str(tmp / "monitor")])
    f.monitor_dir = tmp / "monitor"
    yield f
    assert f.stop() == 0


class ServerError(Exception):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.message, self.status_code = message, status_code


class Client:
    """What gym_http_client.py does: JSON bodies, `message` errors raised as ServerError."""

    def __init__(self, base):
        self.base = base.rstrip("/").removesuffix("/v1")
        self.s = requests.Session()
        self.s.headers.update({"Content-type": "application/json"})

    def _parse(self, r):
        try:
            j = r.json()
        except ValueError:
            r.raise_for_status()
            return {}
        if r.status_code != 200 and "message" in j:
            raise ServerError(j["message"], r.status_code)
        r.raise_for_status()
        return j

    def post(self, route, data=None):
        return self._parse(self.s.post(self.base + route, data=json.dumps(data)))

    def get(self, route):
        return self._parse(self.s.get(self.base + route))

    def create(self, env_id, **kw):
        return self.post("/v1/envs/", dict(env_id=env_id, **kw))["instance_id"]

    def reset(self, iid):
        return self.post(f"/v1/envs/{iid}/reset/")["observation"]

    def step(self, iid, action, render=False):
        r = self.post(f"/v1/envs/{iid}/step/", {"action": action, "render": render})
        return r["observation"], r["reward"], r["done"], r["info"]


@pytest.fixture
def client(farm):
    c = Client(farm.rest_url)
    yield c
    for iid in c.get("/v1/envs/")["all_envs"]:  # like real gym-http-api users, tests leave envs open
        c.s.post(c.base + f"/v1/envs/{iid}/close/")


def raw(farm, method, path, body=None, headers=None, version="HTTP/1.1"):
    """One request on a fresh socket; returns (status line, headers text, body)."""
    port = int(farm.rest_url.split(":")[2].split("/")[0])
    data = b"" if body is None else (body if isinstance(body, bytes) else body.encode())
    head = f"{method} {path} {version}\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    h, _, b = out.partition(b"\r\n\r\n")
    lines = h.decode().split("\r\n")
    return lines[0], "\r\n".join(lines[1:]), b.decode(errors="replace")


# -- tests/test_api.py, the original 16 ------------------------------------------------------

def test_create_destroy(client):
    iid = client.create("CartPole-v0")
    assert iid in client.get("/v1/envs/")["all_envs"]
    client.post(f"/v1/envs/{iid}/close/")
    assert iid not in client.get("/v1/envs/")["all_envs"]


def test_action_space_discrete(client):
    info = client.get(f"/v1/envs/{client.create('CartPole-v0')}/action_space/")["info"]
    assert info["name"] == "Discrete" and info["n"] == 2


def test_action_space_sample(client):
    action = client.get(f"/v1/envs/{client.create('CartPole-v0')}/action_space/sample")["action"]
    assert 0 <= action < 2


def test_action_space_contains(client):
    iid = client.create("CartPole-v0")
    member = lambda x: client.get(f"/v1/envs/{iid}/action_space/contains/{x}")["member"]  # noqa: E731
    assert member(0) == True and member(1) == True and member(2) == False  # noqa: E712


def test_observation_space_box(client):
    info = client.get(f"/v1/envs/{client.create('CartPole-v0')}/observation_space/")["info"]
    assert info["name"] == "Box" and len(info["shape"]) == 1 and info["shape"][0] == 4
    assert len(info["low"]) == 4 and len(info["high"]) == 4


def test_observation_space_contains(client):
    iid = client.create("CartPole-v0")
    route = f"/v1/envs/{iid}/observation_space/contains"
    assert client.post(route, {"name": "Box"})["member"]
    assert client.post(route, {"shape": (4,)})["member"]
    assert client.post(route, {"name": "Box", "shape": [4]})["member"]


def test_reset(client):
    assert len(client.reset(client.create("CartPole-v0"))) == 4
    assert client.reset(client.create("FrozenLake-v0")) == 0


def test_step(client):
    iid = client.create("CartPole-v0")
    client.reset(iid)
    obs, reward, done, info = client.step(iid, 0)
    assert len(obs) == 4 and type(reward) == float and type(done) == bool and type(info) == dict  # noqa: E721
    iid = client.create("FrozenLake-v0")
    client.reset(iid)
    obs, reward, done, info = client.step(iid, 0)
    assert type(obs) == int and type(reward) == float  # noqa: E721


def test_monitor_start_close_upload(client, farm):
    iid = client.create("CartPole-v0")
    client.post(f"/v1/envs/{iid}/monitor/start/", {"directory": "tmp", "force": True, "resume": False,
                                                    "video_callable": False})
    client.reset(iid)
    done, steps = False, 0
    while not done:
        _, _, done, _ = client.step(iid, steps % 2)
        steps += 1
    client.post(f"/v1/envs/{iid}/monitor/close/")
    client.post("/v1/upload/", {"training_dir": "tmp", "api_key": "key", "algorithm_id": None})
    stats = json.loads((farm.monitor_dir / "tmp" / f"openaigym.episode_batch.{iid}.stats.json").read_text())
    assert stats["episode_lengths"] == [steps] and stats["episode_rewards"] == [float(steps)]


def test_bad_instance_id(client):
    calls = [lambda: client.reset("bad_id"), lambda: client.step("bad_id", 1),
             lambda: client.get("/v1/envs/bad_id/action_space/"),
             lambda: client.get("/v1/envs/bad_id/observation_space/"),
             lambda: client.post("/v1/envs/bad_id/monitor/start/",
                                 {"directory": "tmp", "force": True, "resume": False}),
             lambda: client.post("/v1/envs/bad_id/monitor/close/"), lambda: client.post("/v1/envs/bad_id/close/")]
    for call in calls:
        with pytest.raises(ServerError) as e:
            call()
        assert "Instance_id" in e.value.message and e.value.status_code == 400


def test_missing_param_env_id(client):
    with pytest.raises(ServerError) as e:
        client.post("/v1/envs/", {})
    assert "env_id" in e.value.message and e.value.status_code == 400


def test_missing_param_action(client):
    iid = client.create("CartPole-v0")
    client.reset(iid)
    with pytest.raises(ServerError) as e:
        client.post(f"/v1/envs/{iid}/step/", {})
    assert "action" in e.value.message and e.value.status_code == 400


def test_missing_param_monitor_directory(client):
    iid = client.create("CartPole-v0")
    with pytest.raises(ServerError) as e:
        client.post(f"/v1/envs/{iid}/monitor/start/", {"force": True, "resume": False})
    assert "directory" in e.value.message and e.value.status_code == 400


def test_missing_param_upload_directory(client):
    with pytest.raises(ServerError) as e:
        client.post("/v1/upload/", {"api_key": "k"})
    assert "training_dir" in e.value.message and e.value.status_code == 400


def test_empty_param_api_key(client):
    iid = client.create("CartPole-v0")
    client.post(f"/v1/envs/{iid}/monitor/start/", {"directory": "tmp", "force": True, "resume": False})
    client.reset(iid)
    client.step(iid, 1)
    client.post(f"/v1/envs/{iid}/monitor/close/")
    with pytest.raises(ServerError) as e:
        client.post("/v1/upload/", {"training_dir": "tmp", "api_key": ""})
    assert "api_key" in e.value.message and e.value.status_code == 400


def test_create_malformed(client):
    with pytest.raises(ServerError) as e:
        client.create("bad string")
    assert "malformed environment ID" in e.value.message and e.value.status_code == 400


# -- R-* ----------------------------------------------------------------------------------------

def test_r1_r2_r3_create(client, farm):
    assert re.match(r"^[0-9a-f]{8}$", client.create("CartPole-v0"))
    for body in ({}, {"env_id": ""}, {"env_id": None}, {"env_id": []}):
        r = client.s.post(client.base + "/v1/envs/", data=json.dumps(body))
        assert (r.status_code, r.json()) == (400, {"message": "A required request parameter 'env_id' was not provided"})
    r = client.s.post(client.base + "/v1/envs/", data="null")
    assert (r.status_code, r.json()) == (400, {"message": "Request is not a valid json"})
    status, _, body = raw(farm, "POST", "/v1/envs/", "{not json", {"Content-Type": "application/json"})
    assert "400" in status and json.loads(body) == {"message": "Request is not a valid json"}


def test_r4_malformed_and_unknown_ids(client):
    for env_id in ("bad string", "NotFound-v1"):
        r = client.s.post(client.base + "/v1/envs/", data=json.dumps({"env_id": env_id}))
        assert (r.status_code, r.json()["message"]) == (
            400, f"Attempted to look up malformed environment ID '{env_id}'")


def test_r5_seed(client):
    a = client.reset(client.create("CartPole-v0", seed=7))
    b = client.reset(client.create("CartPole-v0", seed=7))
    assert a == b
    assert len(client.reset(client.create("CartPole-v0", seed=0))) == 4


def test_r6_list_keeps_the_requested_id(client):
    iid = client.create("FrozenLake-v0")
    assert client.get("/v1/envs/")["all_envs"][iid] == "FrozenLake-v0"


def test_r7_r8_r9_exact_shapes(client, farm):
    iid = client.create("CartPole-v0")
    status, headers, body = raw(farm, "POST", f"/v1/envs/{iid}/reset/")
    assert "200" in status and "application/json" in headers
    assert re.match(r'^\{"observation":\[(-?[0-9.e+-]+,){3}-?[0-9.e+-]+\]\}\n$', body)
    status, _, body = raw(farm, "POST", f"/v1/envs/{iid}/step/", '{"action":0}', {"Content-Type": "application/json"})
    assert sorted(json.loads(body)) == ["done", "info", "observation", "reward"]
    assert '"reward":1.0' in body and re.search(r'"done":(true|false)', body)
    status, _, body = raw(farm, "POST", f"/v1/envs/{iid}/step/", '{"action":1,"render":true}')
    assert "200" in status


def test_r10_r11_r12_step_validation(client):
    iid = client.create("CartPole-v0")
    client.reset(iid)
    for body in ({}, {"action": []}, {"action": ""}, {"action": None}):
        r = client.s.post(client.base + f"/v1/envs/{iid}/step/", data=json.dumps(body))
        assert r.status_code == 400 and "'action'" in r.json()["message"]
    assert client.step(iid, False)[0]  # false is the int 0 in Python
    r = client.s.post(client.base + "/v1/envs/bad_id/step/", data="{}")
    assert "'action'" in r.json()["message"]  # parameters are checked before the id
    r = client.s.post(client.base + "/v1/envs/bad_id/step/", data='{"action": 0}')
    assert (r.status_code, r.json()["message"]) == (400, "Instance_id bad_id unknown")
    for bad in (5, 1.0):
        r = client.s.post(client.base + f"/v1/envs/{iid}/step/", data=json.dumps({"action": bad}))
        assert r.status_code >= 500


def test_r13_r14_space_info(client):
    iid = client.create("CartPole-v0")
    r = client.s.get(client.base + f"/v1/envs/{iid}/action_space/")
    assert r.text == '{"info":{"n":2,"name":"Discrete"}}\n'
    r = client.s.get(client.base + f"/v1/envs/{iid}/observation_space/")
    assert r.text.startswith('{"info":{"high":[4.800000190734863,1e+100,0.41887903213500977,1e+100],"low":[')
    image = client.create("gymfarm_test/TupleObs-v0")
    info = client.get(f"/v1/envs/{image}/observation_space/")["info"]
    assert info["name"] == "Tuple" and info["spaces"][1]["shape"] == [2, 2] and len(info["spaces"][1]["low"]) == 4


def test_r15_r16_sample_and_contains(client):
    iid = client.create("CartPole-v0")
    assert client.get(f"/v1/envs/{iid}/action_space/sample/")["action"] in (0, 1)
    cont = client.create("MountainCarContinuous-v0")
    a = client.get(f"/v1/envs/{cont}/action_space/sample")["action"]
    assert isinstance(a, list) and isinstance(a[0], float)
    assert client.get(f"/v1/envs/{iid}/action_space/contains/0/")["member"] is True
    r = client.s.get(client.base + f"/v1/envs/{iid}/action_space/contains/abc")
    assert r.status_code == 500


def test_r17_observation_space_contains(client):
    iid = client.create("CartPole-v0")
    route = f"/v1/envs/{iid}/observation_space/contains"
    assert client.post(route, {"name": "Discrete"})["member"] is False
    r = client.s.post(client.base + route, data=json.dumps({"zzz": 1}))
    assert r.status_code == 500


def test_r18_r19_monitor_and_close(client, farm):
    iid = client.create("CartPole-v0")
    r = client.s.post(client.base + f"/v1/envs/{iid}/monitor/start/", data=json.dumps({"directory": "../../etc/x"}))
    assert r.status_code == 204 and r.text == ""
    assert (farm.monitor_dir / "etc" / "x").is_dir()  # mapped inside the operator's directory
    r = client.s.post(client.base + f"/v1/envs/{iid}/monitor/start/", data=json.dumps({"force": True}))
    assert r.status_code == 400 and "'directory'" in r.json()["message"]
    assert client.s.post(client.base + f"/v1/envs/{iid}/monitor/close/", data="null").status_code == 204
    assert client.s.post(client.base + f"/v1/envs/{iid}/close/", data="null").status_code == 204
    assert iid not in client.get("/v1/envs/")["all_envs"]
    r = client.s.post(client.base + f"/v1/envs/{iid}/close/", data="null")
    assert (r.status_code, r.json()["message"]) == (400, f"Instance_id {iid} unknown")


def test_r20_upload(client):
    r = client.s.post(client.base + "/v1/upload/", data=json.dumps({"api_key": "k"}))
    assert r.status_code == 400 and "'training_dir'" in r.json()["message"]
    r = client.s.post(client.base + "/v1/upload/", data=json.dumps({"training_dir": "tmp", "api_key": ""}))
    assert r.status_code == 400 and "'api_key'" in r.json()["message"]
    r = client.s.post(client.base + "/v1/upload/", data=json.dumps({"training_dir": "tmp", "api_key": "k"}))
    assert r.status_code == 204


def test_r21_shutdown_is_off_by_default(client):
    r = client.s.post(client.base + "/v1/shutdown/")
    assert r.status_code == 403 and "--allow-shutdown" in r.json()["message"]


def test_r21_shutdown_when_allowed(tmp_path):
    f = FarmProcess(tmp_path, workers=1, args=["--allow-shutdown"])
    workers = f.worker_pids()
    r = requests.post(f.rest_url.removesuffix("/v1/") + "/v1/shutdown/")
    assert (r.status_code, r.text) == (200, "Server shutting down")
    f.proc.wait(30)
    assert f.proc.returncode == 0
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10)
    f.stop()


def test_r22_slash_variants_answer_directly(client, farm):
    iid = client.create("CartPole-v0")
    for method, path, body in [("GET", f"/v1/envs/{iid}/action_space", None),
                               ("GET", f"/v1/envs/{iid}/observation_space", None),
                               ("POST", "/v1/envs", '{"env_id":"CartPole-v0"}'), ("POST", f"/v1/envs/{iid}/reset", ""),
                               ("GET", f"/v1/envs/{iid}/action_space/sample/", None)]:
        status, _, _ = raw(farm, method, path, body, {"Content-Type": "application/json"})
        assert status.split()[1] == "200", (method, path, status)


def test_r23_unknown_route_wrong_method_options(farm):
    status, _, body = raw(farm, "GET", "/v1/nothing/here")
    assert status.split()[1] == "404"
    status, headers, _ = raw(farm, "GET", "/v1/envs/abc/reset/")
    assert status.split()[1] == "405" and "Allow: POST" in headers
    status, headers, _ = raw(farm, "OPTIONS", "/v1/envs/")
    assert status.split()[1] == "200" and "Allow:" in headers


def test_r24_no_success_carries_a_message(client):
    iid = client.create("CartPole-v0")
    for r in [client.s.post(client.base + f"/v1/envs/{iid}/reset/"), client.s.get(client.base + "/v1/envs/"),
              client.s.post(client.base + f"/v1/envs/{iid}/step/", data='{"action":1}'),
              client.s.get(client.base + f"/v1/envs/{iid}/action_space/")]:
        assert r.status_code == 200 and "message" not in r.json()


def test_r25_http10_closes_and_50000_steps_on_one_keep_alive_connection(client, farm):
    port = int(farm.rest_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/envs/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # the server closes after the response
            data += chunk
    assert data.startswith(b"HTTP/1.0 200")
    iid = client.create("CartPole-v0")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.auto_open = 0  # a closed connection raises instead of silently reconnecting
    conn.connect()
    ok = 0
    done = True
    for i in range(50000):
        if done:
            conn.request("POST", f"/v1/envs/{iid}/reset/", body="null", headers={"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.request("POST", f"/v1/envs/{iid}/step/", body=b'{"action":%d}' % (i % 2),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        ok += resp.status == 200
        done = b'"done":true' in body
    conn.close()
    assert ok == 50000


def test_r26_number_formatting(client):
    iid = client.create("gymfarm_test/DictObs-v0")
    obs = client.s.post(client.base + f"/v1/envs/{iid}/reset/").text
    assert re.search(r'"mode":\d+[,}]', obs) and re.search(r'"position":\[-?\d+\.\d+', obs)
    assert re.search(r'"flags":\[(\d,){3}\d\]', obs)


def test_r28_cpp_binding_flows(client, farm):
    iid = client.create("MountainCarContinuous-v0")
    status, _, _ = raw(farm, "GET", f"/v1/envs/{iid}/action_space")
    assert status.split()[1] == "200"
    status, _, body = raw(farm, "POST", f"/v1/envs/{iid}/reset/", "")
    assert len(json.loads(body)["observation"]) == 2
    status, _, body = raw(farm, "POST", f"/v1/envs/{iid}/step/", '{"action":[0.1],"render":false}')
    assert status.split()[1] == "200" and len(json.loads(body)["observation"]) == 2


def test_eight_clients_at_once(farm):
    results = []

    def run():
        c = Client(farm.rest_url)
        iid = c.create("CartPole-v0")
        c.reset(iid)
        n = 0
        for i in range(300):
            _, _, done, _ = c.step(iid, i % 2)
            n += 1
            if done:
                c.reset(iid)
        c.post(f"/v1/envs/{iid}/close/")
        results.append(n)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [300] * 8


def test_render_png_help_and_openapi(client, farm):
    from openapi_spec_validator import validate

    g = Client(farm.gymnasium_url)
    iid = g.post("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})["instance_id"]
    g.post(f"/v1/envs/{iid}/reset/", {"seed": 1})
    r = g.s.get(g.base + f"/v1/envs/{iid}/render.png")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(r.content[16:20], "big") == 600 and int.from_bytes(r.content[20:24], "big") == 400
    g.s.delete(g.base + f"/v1/envs/{iid}/")
    plain = g.post("/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]  # no render mode: nothing to draw
    assert g.s.get(g.base + f"/v1/envs/{plain}/render.png").status_code == 409
    g.s.delete(g.base + f"/v1/envs/{plain}/")
    made = client.create("CartPole-v0")  # gym-http-api envs render rgb_array, as gym's did (monitor videos)
    client.reset(made)
    assert client.s.get(client.base + f"/v1/envs/{made}/render.png").status_code == 200
    rules = client.get("/v1/help")["v1"]
    step_rule = rules["/v1/envs/{instance_id}/step/"]
    assert step_rule == {"methods": "POST", "doc": step_rule["doc"]}
    assert len(rules) == 16 and all(v["doc"] for v in rules.values())
    assert rules["/v1/envs/"]["methods"] == "POST,GET"
    doc = client.get("/openapi.json")
    validate(doc)
    for rule, v in rules.items():
        for method in v["methods"].split(","):
            assert method.lower() in doc["paths"][rule]
            assert method.lower() in doc["paths"][rule.rstrip("/") or "/"]  # the slash-less twin too
    # each port documents the routes it serves: gymnasium-http-api's are on its own port only
    assert "/v1/envs/{instance_id}/transitions/" not in doc["paths"]
    gdoc = g.get("/openapi.json")
    validate(gdoc)
    assert "/v1/envs/{instance_id}/transitions/" in gdoc["paths"]
    assert "/v1/envs/{instance_id}/monitor/start/" not in gdoc["paths"]


def test_limits(farm):
    status, _, body = raw(farm, "POST", "/v1/envs/", "[" * 200 + "]" * 200)
    assert status.split()[1] == "400" and "message" in json.loads(body)
    port = int(farm.rest_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413") and b"too large" in reply
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431")
    status, _, _ = raw(farm, "GET", "/v1/envs/")
    assert status.split()[1] == "200"  # still serving
