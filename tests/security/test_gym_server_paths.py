"""gym-server's artifacts are files served over HTTP (its port 8000 was a SimpleHTTPServer over its
monitor directory). Here they come from MONITOR-DIR/gym-server only: a path-traversal instance id
or file name (plain, percent-encoded, doubly encoded, absolute), a planted symlink, or another
file in the directory reads nothing outside it; every route passes the same Host/Origin/token
check as the other dialects."""
import http.client
import json
import os

import pytest
import requests

from farm_fixture import FarmProcess

SECRET = "gymfarm-secret-marker-7d1e"


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def raw_get(port: int, target: str, headers=None):
    """GET exactly this target (http.client does not normalize it): (status, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", f"127.0.0.1:{port}")
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gym_server_paths")
    monitor = tmp / "monitor"
    f = FarmProcess(tmp, workers=2, args=["--gym-server-port", "0", "--gym-server-files-port", "0",
                                          "--monitor-dir", str(monitor)])
    # secrets beside and above the artifacts' root
    (tmp / "secret.txt").write_text(SECRET)
    monitor.mkdir(exist_ok=True)
    (monitor / "secret.txt").write_text(SECRET)
    f.root = monitor / "gym-server"
    f.api = f.gym_server_url.rstrip("/").removesuffix("/v1")
    r = requests.post(f.api + "/v1/envs/create/", json={"environment": "CartPole-v1"}, timeout=60)
    f.iid = r.json()["instance_id"]
    requests.post(f"{f.api}/v1/envs/{f.iid}/reset/", json={"render": True}, timeout=60)
    assert (f.root / f.iid / "rendered" / "1.png").exists()
    yield f
    assert f.stop() == 0, f.log()


TRAVERSALS = [
    "/../secret.txt", "/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/%2e%2e/secret.txt",
    "/{id}/../../secret.txt", "/{id}/rendered/../../../secret.txt", "/{id}/rendered/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/{id}/rendered/..%2f..%2f..%2fsecret.txt", "/{id}/simulation/..%2F..%2F..%2Fsecret.txt",
    "/{id}/rendered/%252e%252e/%252e%252e/secret.txt", "/{id}/simulation/%2e%2e", "/..%2fsecret.txt",
    "//etc/passwd", "/%2fetc%2fpasswd", "/{id}/rendered/%2fetc%2fpasswd", "/{id}/simulation/%00secret.txt",
    "/secret.txt", "/{id}/secret.txt", "/{id}/rendered/secret.txt", "/..\\secret.txt",
    "/{id}/simulation/.%2e/.%2e/.%2e/secret.txt", "/{id}%2f..%2f..%2fsecret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_reads_nothing_outside(farm, target):
    for url in (farm.gym_server_files_url, farm.gym_server_url):
        status, body = raw_get(port_of(url), target.format(id=farm.iid))
        assert SECRET.encode() not in body and b"root:" not in body
        assert status in (301, 400, 404), (target, status)


def test_a_planted_symlink_is_not_followed(farm):
    rendered = farm.root / farm.iid / "rendered"
    os.symlink(farm.root.parent / "secret.txt", rendered / "99.png")
    sim = farm.root / farm.iid / "simulation"
    sim.mkdir(exist_ok=True)
    os.symlink(farm.root.parent / "secret.txt", sim / "openaigym.stats.json")
    os.symlink(farm.root.parent, farm.root / "abcdef01")  # an instance directory that is a link
    port = port_of(farm.gym_server_files_url)
    for target in (f"/{farm.iid}/rendered/99.png", f"/{farm.iid}/simulation/openaigym.stats.json",
                   "/abcdef01/rendered/", "/abcdef01/simulation/secret.txt", "/abcdef01/"):
        status, body = raw_get(port, target)
        assert status == 404 and SECRET.encode() not in body, target


def test_api_instance_ids_are_not_paths(farm):
    """The API's {instance_id} is a table key: a path-like one is an unknown id, no file is touched."""
    port = port_of(farm.gym_server_url)
    for iid in ("..%2f..%2fsecret", "%2e%2e", "../..", farm.iid + "%2f.."):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"render": True})
        c.request("POST", f"/v1/envs/{iid}/reset/", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        assert r.status == 404 and SECRET.encode() not in data
    # nothing was written outside the artifacts' root
    assert sorted(p.name for p in farm.root.parent.iterdir()) == ["gym-server", "secret.txt"]


def test_files_are_where_the_operator_said(farm):
    """The frames of an instance live under MONITOR-DIR/gym-server/<id>/ and nowhere a client names."""
    requests.post(f"{farm.api}/v1/envs/{farm.iid}/monitor/start/",
                  json={"force": True, "resume": False, "directory": "/tmp/elsewhere"}, timeout=60)
    requests.post(f"{farm.api}/v1/envs/{farm.iid}/monitor/close/", timeout=60)
    assert not os.path.exists("/tmp/elsewhere")
    assert list((farm.root / farm.iid / "simulation").glob("openaigym.episode_batch.*"))


def test_every_route_passes_the_access_check(tmp_path):
    """With a token, the API, the artifacts and the render page all need it; a foreign Origin is 403."""
    f = FarmProcess(tmp_path, workers=1, args=["--gym-server-port", "0", "--gym-server-files-port", "0",
                                               "--require-token"])
    try:
        api, files = port_of(f.gym_server_url), port_of(f.gym_server_files_url)
        for port, target in ((api, "/v1/help"), (api, "/render.html"), (files, "/render.html"), (files, "/"),
                             (api, "/00000000/rendered/latest.png")):
            assert raw_get(port, target)[0] == 401, target
            assert raw_get(port, target, {"Authorization": f"Bearer {f.token}"})[0] in (200, 404), target
        r = requests.post(f.gym_server_url.rstrip("/") + "/envs/create/", json={"environment": "CartPole-v1"},
                          headers={"Origin": "http://attacker.example", "Authorization": f"Bearer {f.token}"},
                          timeout=30)
        assert r.status_code == 403
    finally:
        assert f.stop() == 0


def test_a_rebound_host_is_refused(farm):
    """A farm without a token answers to loopback names only, on both gym-server ports (DNS rebinding)."""
    for url in (farm.gym_server_url, farm.gym_server_files_url):
        port = port_of(url)
        for target in ("/v1/help", f"/{farm.iid}/rendered/latest.png", "/render.html"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.putrequest("GET", target, skip_host=True)
            c.putheader("Host", "127.attacker.example")
            c.endheaders()
            r = c.getresponse()
            assert r.status == 403 and b"PNG" not in r.read(), target
            c.close()
