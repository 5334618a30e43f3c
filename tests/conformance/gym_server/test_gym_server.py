"""gym-server (flaviotruzzi/gym-server) dialect conformance against a real farm: its README's curl
session, a small client written from its docs, and the behaviours of its source (gym_server.py,
EnvironmentManager.py, Exceptions.py, monitor/render.html), on --gym-server-port and
--gym-server-files-port (docs/dialects.md)."""
import json
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
import requests

from farm_fixture import FarmProcess, wait_until

HERE = Path(__file__).resolve().parent

ID = re.compile(r"^[0-9a-f]{8}$")


def decode_png(data: bytes):
    """A PNG of 8-bit RGB or RGBA, decoded by the book (RFC 2083): (width, height, pixel counts)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw, stride, prev, pixels = zlib.decompress(idat), w * bpp, bytearray(w * bpp), Counter()
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.update(tuple(line[i:i + bpp]) for i in range(0, stride, bpp))
        prev = line
    return w, h, pixels


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gym_server")
    f = FarmProcess(tmp, workers=6, args=["--gym-server-port", "0", "--gym-server-files-port", "0",
                                          "--monitor-dir", str(tmp / "monitor"), "--gym-server-max-frames", "5",
                                          "--import", "gym_server_envs"],
                    env_vars={"PYTHONPATH": str(HERE)})
    f.files_root = tmp / "monitor" / "gym-server"
    f.api = f.gym_server_url.rstrip("/").removesuffix("/v1")
    f.files = f.gym_server_files_url.rstrip("/")
    yield f
    assert f.stop() == 0, f.log()


class GymServerClient:
    """A client written from gym-server's README: JSON in, JSON out, errors as {"error": ...}."""

    class Error(Exception):
        def __init__(self, status, message):
            super().__init__(message)
            self.status, self.message = status, message

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.s.headers["Content-Type"] = "application/json"

    def _post(self, route, body=None):
        r = self.s.post(self.base + route, data=json.dumps(body) if body is not None else None, timeout=60)
        if r.status_code >= 400:
            raise self.Error(r.status_code, r.json()["error"])
        return r.json()

    def create(self, environment):
        return self._post("/v1/envs/create/", {"environment": environment})["instance_id"]

    def reset(self, iid, render=False):
        return self._post(f"/v1/envs/{iid}/reset/", {"render": render})

    def step(self, iid, action, render=False):
        return self._post(f"/v1/envs/{iid}/step/", {"action": action, "render": render})

    def info(self, iid):
        return self.s.get(f"{self.base}/v1/envs/{iid}/info", timeout=60).json()

    def monitor_start(self, iid, force=False, resume=False):
        return self._post(f"/v1/envs/{iid}/monitor/start/", {"force": force, "resume": resume})

    def monitor_close(self, iid):
        return self._post(f"/v1/envs/{iid}/monitor/close/")

    def upload(self, iid, **kw):
        return self._post(f"/v1/envs/{iid}/upload/", kw)


@pytest.fixture
def client(farm):
    return GymServerClient(farm.api)


def test_readme_curl_session(farm):
    """The README's curl commands, unchanged but for the host and port, in its order."""
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    base = farm.api

    def curl(*args):
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60)
        body, _, code = r.stdout.rpartition("\n")
        return int(code), json.loads(body)

    code, helped = curl(f"{base}/v1/help")
    assert code == 200 and "/v1/envs/create/" in helped["v1"]
    code, made = curl("-H", "Content-Type: application/json", "-XPOST", f"{base}/v1/envs/create/",
                      "-d", '{"environment": "CartPole-v0"}')
    assert code == 201 and ID.match(made["instance_id"])
    iid = made["instance_id"]
    code, reset = curl("-XPOST", "-H", "Content-Type: application/json", f"{base}/v1/envs/{iid}/reset/",
                       "-d", '{"render": true}')
    # gym-server's code (not its README, which nests this one level deeper) sends it flat
    assert code == 200 and sorted(reset) == ["observation", "render"]
    assert len(reset["observation"]) == 4 and reset["render"] == "successfully rendered: 1.png"
    code, step = curl("-XPOST", "-H", "Content-Type: application/json", f"{base}/v1/envs/{iid}/step/",
                      "-d", '{"action": 1}')
    assert code == 200 and sorted(step) == ["done", "info", "observation", "reward"]
    assert step["done"] is False and step["info"] == {} and step["reward"] == 1.0 and len(step["observation"]) == 4
    code, started = curl("-XPOST", "-H", "Content-Type: application/json",
                         f"{base}/v1/envs/{iid}/monitor/start/", "-d", '{"force": false, "resume": false}')
    assert (code, started) == (200, {"message": True})
    # the README stops the monitor at monitor/stop/ (its code's rule is monitor/close/): both work
    code, stopped = curl("-XPOST", "-H", "Content-Type: application/json", f"{base}/v1/envs/{iid}/monitor/stop/")
    assert (code, stopped) == (200, {"message": True})
    code, uploaded = curl("-XPOST", "-H", "Content-Type: application/json", f"{base}/v1/envs/{iid}/upload/", "-d",
                          '{"algorithm_id": "my_id", "writeup": "http://mygist", "api_key": "my_apikey", '
                          '"ignore_open_monitors": true}')
    assert (code, uploaded) == (200, {"message": True})
    code, info = curl("-XGET", "-H", "Content-Type: application/json", f"{base}/v1/envs/{iid}/info")
    assert code == 200 and info["action_space"] == "Discrete(2)"
    assert info["observation_space"]["shape"] == [4]
    assert info["observation_space"]["high"][1] == float("inf") and info["observation_space"]["low"][3] == -float("inf")
    # "The images generated are available at: http://localhost:8000/<id>/rendered/"
    listing = requests.get(f"{farm.files}/{iid}/rendered/", timeout=30)
    assert listing.status_code == 200 and 'href="1.png"' in listing.text and 'href="latest.png"' in listing.text
    assert requests.get(f"{farm.files}/{iid}/simulation/", timeout=30).status_code == 200
    page = requests.get(f"{farm.files}/render.html?instance_id={iid}", timeout=30)
    assert page.status_code == 200 and "latest.png" in page.text


def test_a_client_from_the_docs_plays_episodes(client):
    iid = client.create("CartPole-v1")
    for _ in range(3):
        obs = client.reset(iid)
        assert list(obs) == ["observation"] and len(obs["observation"]) == 4  # no render asked, none answered
        total, done, n = 0.0, False, 0
        while not done:
            r = client.step(iid, n % 2)
            total += r["reward"]
            done = r["done"]
            n += 1
            assert n <= 500
        assert total == n


def test_create_answers_201_with_unique_unguessable_ids(farm, client):
    ids = [client.create("CartPole-v1") for _ in range(6)]
    assert all(ID.match(i) for i in ids) and len(set(ids)) == 6
    r = requests.post(farm.api + "/v1/envs/create/", json={"environment": "NoSuchEnv-v9"}, timeout=60)
    assert r.status_code == 400 and "error" in r.json()
    r = requests.post(farm.api + "/v1/envs/create/", json={}, timeout=60)
    assert r.status_code == 400 and "'environment'" in r.json()["error"]


def test_render_writes_real_pngs_of_the_rgb_array_frame(farm, client):
    iid = client.create("CartPole-v1")
    assert client.reset(iid, render=True)["render"] == "successfully rendered: 1.png"
    r = client.step(iid, 0, render=True)
    assert r["render"] == "successfully rendered: 2.png"
    w, h, pixels = decode_png((farm.files_root / iid / "rendered" / "2.png").read_bytes())
    assert (w, h) == (600, 400) and sum(pixels.values()) == 600 * 400
    assert len(pixels) > 2  # a drawing, not a blank image
    # the same bytes over HTTP, on the files port and on the API port
    for base in (farm.files, farm.api):
        got = requests.get(f"{base}/{iid}/rendered/2.png", timeout=30)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/png"
        assert got.content == (farm.files_root / iid / "rendered" / "2.png").read_bytes()
    latest = requests.get(f"{farm.files}/{iid}/rendered/latest.png?0.123", timeout=30)
    assert latest.content == (farm.files_root / iid / "rendered" / "2.png").read_bytes()


def test_frames_are_capped_oldest_first(farm, client):
    iid = client.create("CartPole-v1")
    client.reset(iid)
    for k in range(1, 9):
        assert client.step(iid, k % 2, render=True)["render"] == f"successfully rendered: {k}.png"
    names = sorted(p.name for p in (farm.files_root / iid / "rendered").iterdir())
    assert names == ["4.png", "5.png", "6.png", "7.png", "8.png", "latest.png"]  # --gym-server-max-frames 5
    assert requests.get(f"{farm.files}/{iid}/rendered/1.png", timeout=30).status_code == 404
    assert (farm.files_root / iid / "rendered" / "latest.png").read_bytes() == \
        (farm.files_root / iid / "rendered" / "8.png").read_bytes()


def test_render_of_an_env_without_frames_is_an_error_text(farm, client):
    iid = client.create("gym_server_test/NoFrames-v0")  # made without render_mode, which it refuses
    r = client.reset(iid, render=True)
    assert r["observation"] == [0.0, 0.0] and r["render"].startswith("Error: ")
    assert not (farm.files_root / iid / "rendered").exists()
    # a small env's own frame: its size as it drew it
    iid = client.create("gymfarm_test/MultiBinary-v0")
    assert client.reset(iid, render=True)["render"] == "successfully rendered: 1.png"
    assert decode_png((farm.files_root / iid / "rendered" / "1.png").read_bytes())[:2] == (12, 8)


def test_step_errors_are_invalid_usage(farm, client):
    iid = client.create("CartPole-v1")
    with pytest.raises(GymServerClient.Error) as e:
        client.step(iid, 0)  # before any reset: gym's ResetNeeded, as InvalidUsage
    assert e.value.status == 400 and "reset" in e.value.message
    client.reset(iid)
    for bad in (7, -1, "abc", [1, 0], {"a": 1}):
        with pytest.raises(GymServerClient.Error) as e:
            client.step(iid, bad)
        assert (e.value.status, e.value.message) == (400, "Invalid Action")
    assert client.step(iid, "1")["reward"] == 1.0  # int("1"), as gym-server's int() took it
    assert client.step(iid, 0.9)["reward"] == 1.0  # int(0.9) == 0
    r = requests.post(f"{farm.api}/v1/envs/{iid}/step/", data="{not json", timeout=30)
    assert r.status_code == 400 and "error" in r.json()


def test_done_is_terminated_or_truncated(client):
    iid = client.create("MountainCar-v0")  # never reaches the goal pushing left: truncated at 200
    client.reset(iid)
    dones = [client.step(iid, 0)["done"] for _ in range(200)]
    assert dones == [False] * 199 + [True]


def test_info_of_other_spaces(client):
    iid = client.create("FrozenLake-v1")
    info = client.info(iid)
    assert info["action_space"] == "Discrete(4)"
    assert info["observation_space"]["shape"] == [] and info["observation_space"]["low"] == 0
    assert info["observation_space"]["high"] == 15
    iid = client.create("Pendulum-v1")
    info = client.info(iid)
    assert info["action_space"] == "Box(-2.0, 2.0, (1,), float32)"
    assert info["observation_space"] == {"high": [1.0, 1.0, 8.0], "low": [-1.0, -1.0, -8.0], "shape": [3]}


def test_info_writes_infinity_as_python_does(farm, client):
    iid = client.create("CartPole-v1")
    text = requests.get(f"{farm.api}/v1/envs/{iid}/info", timeout=30).text
    assert "Infinity" in text and "-Infinity" in text


def test_monitor_writes_episode_statistics(farm, client):
    iid = client.create("CartPole-v1")
    assert client.monitor_start(iid) == {"message": True}
    lengths = []
    for _ in range(2):
        client.reset(iid)
        n, done = 0, False
        while not done:
            done = client.step(iid, 1)["done"]
            n += 1
        client.step(iid, 1)  # a step past the end: not an episode of its own
        lengths.append(n)
    assert client.monitor_close(iid) == {"message": True}
    sim = farm.files_root / iid / "simulation"
    stats = json.loads(next(sim.glob("openaigym.episode_batch.*.stats.json")).read_text())
    assert stats["episode_lengths"] == lengths and stats["episode_rewards"] == [float(n) for n in lengths]
    manifest = json.loads(next(sim.glob("openaigym.manifest.*.manifest.json")).read_text())
    assert manifest["env_info"]["env_id"] == "CartPole-v1"
    served = requests.get(f"{farm.files}/{iid}/simulation/{manifest['stats']}", timeout=30)
    assert served.status_code == 200 and served.json() == stats
    # existing monitor files: refused without force or resume, as gym's Monitor did; force clears them
    with pytest.raises(GymServerClient.Error) as e:
        client.monitor_start(iid)
    assert e.value.status == 400 and "force" in e.value.message
    assert client.monitor_start(iid, resume=True) == {"message": True}
    assert client.monitor_close(iid) == {"message": True}
    assert len(list(sim.glob("openaigym.episode_batch.*"))) == 2
    assert client.monitor_start(iid, force=True) == {"message": True}
    assert list(sim.glob("openaigym.*")) == []


def test_upload_answers_true_and_sends_nothing(farm, client):
    iid = client.create("CartPole-v1")
    assert client.upload(iid, algorithm_id="x", api_key="k") == {"message": True}
    r = requests.post(f"{farm.api}/v1/envs/{iid}/upload/", timeout=30)  # gym-server: no JSON is an error
    assert r.status_code == 400 and "error" in r.json()


def test_help_lists_every_rule_with_methods_and_doc(farm):
    helped = requests.get(farm.api + "/v1/help", timeout=30).json()["v1"]
    rules = {"/v1/envs/create/": "POST,OPTIONS", "/v1/envs/<instance_id>/reset/": "POST,OPTIONS",
             "/v1/envs/<instance_id>/step/": "POST,OPTIONS", "/v1/envs/<instance_id>/monitor/start/": "POST,OPTIONS",
             "/v1/envs/<instance_id>/monitor/close/": "POST,OPTIONS", "/v1/envs/<instance_id>/upload/": "POST,OPTIONS",
             "/v1/envs/<instance_id>/info": "HEAD,OPTIONS,GET", "/v1/help": "HEAD,OPTIONS,GET"}
    for rule, methods in rules.items():
        assert helped[rule]["methods"] == methods
        assert helped[rule]["doc"].strip()
    assert set(helped) - set(rules) == {"/v1/envs/<instance_id>/monitor/stop/"}


def test_methods_and_unknown_routes(farm):
    r = requests.get(farm.api + "/v1/envs/create/", timeout=30)
    assert r.status_code == 405
    r = requests.options(farm.api + "/v1/envs/create/", timeout=30)
    assert r.status_code == 200 and "POST" in r.headers["Allow"]
    assert requests.head(farm.api + "/v1/help", timeout=30).status_code == 200
    assert requests.get(farm.api + "/v1/nothing", timeout=30).status_code == 404
    # the files port serves no API
    assert requests.get(farm.files + "/v1/help", timeout=30).status_code == 404


def test_unknown_instance(farm, client):
    for iid in ("00000000", "nothex!!"):
        with pytest.raises(GymServerClient.Error) as e:
            client.reset(iid)
        assert e.value.status == 404 and iid in e.value.message


def test_render_page_is_self_contained(farm):
    page = requests.get(f"{farm.files}/render.html?instance_id=abcdef01", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "https://" not in page.text and "http://" not in page.text  # no CDN scripts, no fixed host
    assert "500" in page.text and "/rendered/latest.png" in page.text
    assert requests.get(f"{farm.api}/render.html", timeout=30).status_code == 200


def test_instances_are_the_gateways_and_reaped_at_idle_ttl(tmp_path):
    f = FarmProcess(tmp_path, workers=1, args=["--gym-server-port", "0", "--idle-ttl", "1",
                                               "--monitor-dir", str(tmp_path / "monitor")])
    try:
        c = GymServerClient(f.gym_server_url.rstrip("/").removesuffix("/v1"))
        iid = c.create("CartPole-v1")
        assert c.reset(iid, render=True)["render"] == "successfully rendered: 1.png"
        with f.connect() as native:  # another client's list does not show it: the gateway owns it
            assert iid not in native.list()

        def gone():
            try:
                c.step(iid, 0)
                return False
            except GymServerClient.Error as e:
                return e.status == 404

        assert wait_until(gone, 15, interval=1.2)
        # the reaped instance's files are kept
        assert (tmp_path / "monitor" / "gym-server" / iid / "rendered" / "1.png").exists()
    finally:
        assert f.stop() == 0


def test_gym_server_port_is_off_by_default(start_farm):
    f = start_farm(workers=1)
    assert f.gym_server_url == "" and f.gym_server_files_url == "" and f.rest_url


def test_images_decode_as_the_env_drew_them(farm, client):
    """The frame is the env's rgb_array render, pixel for pixel: CartPole's cart is black on white."""
    iid = client.create("CartPole-v1")
    client.reset(iid, render=True)
    _, _, colors = decode_png(requests.get(f"{farm.files}/{iid}/rendered/1.png", timeout=30).content)
    assert colors.get((255, 255, 255), 0) > 600 * 400 // 2  # mostly background
    assert (0, 0, 0) in colors  # the track line


def test_the_render_page_shows_the_live_frame_in_chromium(farm, client):
    """monitor/render.html as a person opens it: the latest frame, and a new one after steps."""
    from browser import browser, image_pixels

    driver = browser()
    try:
        iid = client.create("CartPole-v1")
        client.reset(iid, render=True)
        driver.get(f"{farm.files}/render.html?instance_id={iid}")
        assert wait_until(lambda: image_pixels(driver, "frame") is not None, 15), "no frame shown"
        first = image_pixels(driver, "frame")
        assert driver.find_element("id", "status").text == f"instance {iid}"
        for i in range(10):  # the cart and the pole move: the page's next fetch shows another frame
            client.step(iid, i % 2, render=True)
        assert wait_until(lambda: image_pixels(driver, "frame") not in (None, first), 15), "the frame never changed"
    finally:
        driver.quit()
