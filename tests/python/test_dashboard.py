"""GET /dashboard (docs/operations.md "Dashboard"): the page and the JSON it polls need the farm's
token (given once as ?token=, then kept in an HttpOnly SameSite=Strict cookie), and on a loopback
farm without --require-token work without it; frames of the instances the gateway may see as PNGs.
Then the page itself in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): the workers with their states, a restart after a kill -9, an instance's frame that
changes between two reads, and a screenshot kept as an artifact."""
import os
import re
import shutil
import signal
import struct
import threading
import time

import pytest
import requests

from browser import browser, click, image_pixels
from farm_fixture import ROOT, wait_until


def base(f):
    return f.rest_url.removesuffix("/v1/")


def get(url, **kw):
    return requests.get(url, timeout=30, allow_redirects=False, **kw)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def make_shared(c, env_id="CartPole-v1", **kw):
    return c.call("make", body={"env_id": env_id, "kwargs": kw, "shared": True})["instance_id"]


class Stepper:
    """Steps instances in a thread until stopped (the farm's envs are busy while the page watches)."""

    def __init__(self, farm, instances):
        self.farm, self.instances = farm, instances
        self.stop_flag = threading.Event()
        self.steps = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        for i in self.instances:
            self.farm.call("reset", i, {"seed": 0})
        while not self.stop_flag.is_set():
            for i in self.instances:
                r = self.farm.call("step", i, {"action": self.steps % 2})
                self.steps += 1
                if r["terminated"] or r["truncated"]:
                    self.farm.call("reset", i, {})
            time.sleep(0.002)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(30)


# -- access ------------------------------------------------------------------------------------


def test_a_token_farm_needs_the_token_once_then_its_cookie(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    assert farm.token
    root = base(farm)
    for path in ("/dashboard", "/dashboard/api/stats", "/dashboard/frames/abc"):
        assert get(root + path).status_code == 401, path
        assert get(root + path + "?token=wrong").status_code == 401, path
        assert get(root + path, headers={"Cookie": "gymfarm_dashboard=" + b"wrong".hex()}).status_code == 401, path
        assert get(root + path, headers={"Cookie": "gymfarm_dashboard=not-hex"}).status_code == 401, path
    # the token once: a redirect to the page without it, the cookie holding it
    r = get(root + "/dashboard?token=" + farm.token)
    assert r.status_code == 303, (r.status_code, r.text)
    assert r.headers["Location"] == "/dashboard"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie, cookie
    assert farm.token not in cookie  # kept as hex, not as itself
    jar = {"Cookie": cookie.split(";", 1)[0]}
    page = get(root + "/dashboard", headers=jar)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<title>gymfarm dashboard</title>" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script src" not in page.text and "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    stats = get(root + "/dashboard/api/stats", headers=jar)
    assert stats.status_code == 200 and stats.headers["Content-Type"] == "application/json"
    assert len(stats.json()["stats"]["workers"]) == 1
    # a wrong token in the URL is not rescued by a good cookie; Bearer works as on every route
    assert get(root + "/dashboard/api/stats?token=wrong", headers=jar).status_code == 401
    auth = {"Authorization": "Bearer " + farm.token}
    assert get(root + "/dashboard/api/stats", headers=auth).status_code == 200
    # a page of another site is refused even with the cookie (the gateway's Origin rule)
    evil = {**jar, "Origin": "http://evil.example"}
    assert get(root + "/dashboard/api/stats", headers=evil).status_code == 403
    assert requests.post(root + "/dashboard/api/stats", headers=auth, timeout=30).status_code == 405
    assert get(root + "/dashboard/nothing", headers=auth).status_code == 404


def test_a_loopback_farm_without_require_token_serves_it_to_loopback_names_only(start_farm):
    farm = start_farm(workers=1)
    assert not farm.token
    root = base(farm)
    page = get(root + "/dashboard")
    assert page.status_code == 200 and "<title>gymfarm dashboard</title>" in page.text
    stats = get(root + "/dashboard/api/stats")
    assert stats.status_code == 200 and len(stats.json()["stats"]["workers"]) == 1
    assert get(root + "/dashboard?token=anything").status_code == 200  # no token to keep: the page itself
    # DNS rebinding: a name that merely resolves to 127.0.0.1 is not this farm's
    assert get(root + "/dashboard", headers={"Host": "evil.example"}).status_code == 403
    assert get(root + "/dashboard/api/stats", headers={"Host": "evil.example"}).status_code == 403


# -- what it shows -----------------------------------------------------------------------------


def test_instances_name_their_owner_session_and_dialect(start_farm):
    """Each instance names the session that made it (the number the farm gave it, the client's name,
    how it came) and its dialect; Gymie's are counted apart from native ones, on the page and in
    /metrics."""
    import json

    from websockets.sync.client import connect as ws_connect

    farm = start_farm(workers=4)
    root = base(farm)
    with farm.connect(name="trainer-7") as c, farm.connect(name="x\x00" + "y" * 100) as odd, \
            ws_connect(farm.gymie_url, open_timeout=30) as ws:
        mine = c.call("make", body={"env_id": "CartPole-v1"})["instance_id"]
        theirs = make_shared(odd)
        ws.send(json.dumps({"method": "make", "params": {"env_id": "CartPole-v1"}}))
        gymie = ws.recv(timeout=60)  # Gymie answers a make with the bare id
        assert requests.post(root + "/v1/envs/", json={"env_id": "CartPole-v1"}, timeout=60).status_code == 200
        rows = {i["instance"]: i for i in get(root + "/dashboard/api/stats").json()["instances"]}
        assert re.fullmatch(r"session #\d+ trainer-7 \(local\)", rows[mine]["owner"]), rows[mine]
        assert rows[mine]["dialect"] == "native" and not rows[mine]["viewable"]
        # a peer's name is cut to 64 printable characters; shared instances say so and may be watched
        assert re.fullmatch(r"session #\d+ x\?y{62} \(local\), shared", rows[theirs]["owner"]), rows[theirs]
        assert rows[theirs]["viewable"]
        assert rows[gymie]["dialect"] == "gymie" and re.fullmatch(r"Gymie #\d+ \(127\.0\.0\.1\)", rows[gymie]["owner"])
        rest = [i for i in rows.values() if i["dialect"] == "rest"]  # its farm id is not the REST id
        assert len(rest) == 1 and rest[0]["viewable"] and rest[0]["owner"].startswith("REST"), rows
        n_mine = int(re.search(r"#(\d+)", rows[mine]["owner"]).group(1))
        n_theirs = int(re.search(r"#(\d+)", rows[theirs]["owner"]).group(1))
        assert n_theirs > n_mine  # numbered in the order the sessions opened
        metrics = requests.get(root + "/metrics", timeout=30).text
        for dialect, n in (("native", 2), ("gymie", 1), ("rest", 1), ("gym_server", 0)):
            assert f'gymfarm_instances{{dialect="{dialect}"}} {n}' in metrics, metrics
        ws.send(json.dumps({"method": "close", "params": {"instance_id": gymie}}))
        assert json.loads(ws.recv(timeout=60)) is True
        assert wait_until(lambda: 'gymfarm_instances{dialect="gymie"} 0' in
                          requests.get(root + "/metrics", timeout=30).text, 10)



def test_stats_name_the_instances_and_frames_come_from_render(start_farm):
    farm = start_farm(workers=3)
    root = base(farm)
    with farm.connect() as c:
        watched = make_shared(c, render_mode="rgb_array")
        private = c.call("make", body={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})["instance_id"]
        no_frames = make_shared(c)  # no render_mode
        for i in (watched, private, no_frames):
            c.call("reset", i, {"seed": 1})
        rest = requests.post(root + "/v1/envs/", json={"env_id": "CartPole-v1"}, timeout=60)
        assert rest.status_code == 200, rest.text
        data = get(root + "/dashboard/api/stats").json()
        by_id = {i["instance"]: i for i in data["instances"]}
        assert by_id[watched]["viewable"] and by_id[watched]["env_id"] == "CartPole-v1"
        assert not by_id[private]["viewable"] and by_id[private]["dialect"] == "native"
        rest_rows = [i for i in data["instances"] if i["dialect"] == "rest"]
        assert len(rest_rows) == 1 and rest_rows[0]["viewable"], data["instances"]
        assert {w["state"] for w in data["stats"]["workers"]} <= {"idle", "assigned", "starting"}
        assert "gymie_gym_http_api" in data["connections"]

        r = get(root + f"/dashboard/frames/{watched}")
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text
        assert png_size(r.content) == (600, 400)
        # ownership stays: a native client's own instance is not the gateway's to render
        r = get(root + f"/dashboard/frames/{private}")
        assert r.status_code == 404 and "shared" in r.json()["message"]
        r = get(root + f"/dashboard/frames/{no_frames}")
        assert r.status_code == 409 and "rgb_array" in r.json()["message"]
        assert get(root + "/dashboard/frames/..%2Fetc").status_code == 404
        assert get(root + "/dashboard/frames/" + "a" * 65).status_code == 404


def test_viewers_share_one_render_per_interval(start_farm):
    """However many viewers poll, the env pays one render per 200 ms: a request answered within
    200 ms of a render gets that frame, though the env has stepped since; after it, a new one."""
    farm = start_farm(workers=1)
    root = base(farm)
    with farm.connect() as c:
        watched = make_shared(c, render_mode="rgb_array")
        c.call("reset", watched, {"seed": 3})
        url = root + f"/dashboard/frames/{watched}"
        for _ in range(5):  # a loaded host may need another try to answer within 200 ms
            t0 = time.monotonic()
            first = get(url).content  # rendered at or after t0
            for _ in range(10):
                c.call("step", watched, {"action": 1})  # the cart moves: a new render would differ
            within = []
            for _ in range(3):  # new connections: no per-connection pace
                r = get(url)
                if time.monotonic() < t0 + 0.2:
                    within.append(r.content)
            if within:
                assert all(b == first for b in within)
                break
            time.sleep(0.25)
        else:
            pytest.fail("no request was answered within 200 ms of a render")
        time.sleep(0.25)
        later = get(url).content
        assert later != first  # the pole moved: a new render after the interval


def test_a_viewer_polling_back_to_back_gets_five_frames_a_second(start_farm):
    """Frames are paced per connection (one per 200 ms): a client that asks back to back waits
    instead of costing the gateway (and the host's CPU) a reply per round trip."""
    farm = start_farm(workers=1)
    root = base(farm)
    with farm.connect() as c:
        watched = make_shared(c, render_mode="rgb_array")
        c.call("reset", watched, {"seed": 0})
        s = requests.Session()
        assert s.get(root + f"/dashboard/frames/{watched}", timeout=30).status_code == 200
        t = time.monotonic()
        for _ in range(10):
            assert s.get(root + f"/dashboard/frames/{watched}", timeout=30).status_code == 200
        took = time.monotonic() - t
        assert 1.9 <= took < 10, took
        # the pace is the connection's: another connection is not held up by it
        t = time.monotonic()
        assert requests.get(root + f"/dashboard/frames/{watched}", timeout=30).status_code == 200
        assert time.monotonic() - t < 1.0


# -- the page in a browser ---------------------------------------------------------------------

def rows(driver, table):
    """[{data attributes}] of a table's body rows, as the page rendered them."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(r => Object.assign({}, r.dataset,"
        " {text: r.innerText}))", "#" + table)


def frame_pixels(driver):
    """The frame image as the page shows it (a data: URL): its stream's latest frame."""
    return image_pixels(driver, "frame", streaming=True)


def test_the_page_in_chromium_shows_workers_a_restart_and_live_frames(start_farm, tmp_path):
    driver = browser()
    farm = start_farm(workers=3, args=["--require-token"])
    c = farm.connect(token=farm.token)
    stepper = None
    try:
        watched = make_shared(c, render_mode="rgb_array")
        stepper = Stepper(c, [watched])
        driver.get(base(farm) + "/dashboard?token=" + farm.token)
        assert driver.current_url.endswith("/dashboard"), driver.current_url  # the token left the URL
        kept = {k["name"]: k for k in driver.get_cookies()}["gymfarm_dashboard"]
        assert kept["httpOnly"] and kept["sameSite"] == "Strict", kept
        assert driver.execute_script("return document.cookie") == ""  # the page's script cannot read it
        assert wait_until(lambda: len(rows(driver, "workers")) == 3, 30), rows(driver, "workers")
        states = {r["state"] for r in rows(driver, "workers")}
        assert states <= {"idle", "assigned"} and "assigned" in states, states

        # kill -9 an idle worker: the page shows its slot restarted, and the reason
        idle = next(r for r in rows(driver, "workers") if r["state"] == "idle")
        os.kill(int(idle["pid"]), signal.SIGKILL)

        def restarted():
            for r in rows(driver, "workers"):
                if r["worker"] == idle["worker"] and r["pid"] != idle["pid"] and int(r["restarts"]) >= 1:
                    return r
            return None

        assert wait_until(restarted, 30), rows(driver, "workers")
        assert "signal 9" in restarted()["text"] or "SIGKILL" in restarted()["text"], restarted()
        restart_log = driver.find_element("id", "restarts").text
        assert f"worker {idle['worker']}" in restart_log, restart_log

        # click the stepping instance: its frames, live, fed by one stream
        click(driver, f'#instances tr[data-instance="{watched}"]')
        img = driver.find_element("id", "frame")
        assert wait_until(lambda: f"/dashboard/stream/{watched}" in (img.get_attribute("src") or ""), 20), \
            driver.find_element("id", "frame-status").text
        assert wait_until(lambda: frame_pixels(driver) is not None, 20), driver.find_element("id", "frame-status").text
        one = frame_pixels(driver)
        assert wait_until(lambda: frame_pixels(driver) not in (None, one), 20), "the frame did not change"
        auth = {"Authorization": "Bearer " + farm.token}
        streams = lambda: get(base(farm) + "/dashboard/api/stats", headers=auth).json()["streams"]  # noqa: E731
        assert streams() == 1
        click(driver, "#frame-stop")  # stopping ends the stream
        assert wait_until(lambda: streams() == 0, 10), streams()
        click(driver, f'#instances tr[data-instance="{watched}"]')
        assert wait_until(lambda: streams() == 1, 10), streams()
        # a hidden tab holds no stream (another tab in front); shown again, it asks for one
        page = driver.current_window_handle
        driver.switch_to.new_window("tab")
        assert wait_until(lambda: streams() == 0, 10), streams()
        driver.close()
        driver.switch_to.window(page)
        assert wait_until(lambda: streams() == 1, 10), streams()
        time.sleep(20 if os.environ.get("GYMFARM_UPDATE_SCREENSHOT") else 1.5)  # charts with a few points
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("GYMFARM_UPDATE_SCREENSHOT"):  # the README's picture
            shutil.copy(shot, ROOT / "docs" / "img" / "dashboard.png")
    finally:
        if stepper:
            stepper.stop()
        c.close()
        driver.quit()


def test_the_page_in_chromium_refuses_a_wrong_token(start_farm):
    driver = browser()
    farm = start_farm(workers=1, args=["--require-token"])
    try:
        driver.get(base(farm) + "/dashboard?token=" + farm.token)
        assert driver.title == "gymfarm dashboard"
        assert wait_until(lambda: rows(driver, "workers"), 20)
        # a wrong token in the URL is refused, though the browser holds the right one's cookie
        driver.get(base(farm) + "/dashboard?token=wrong")
        assert "gymfarm dashboard" not in driver.title
        assert "needs its token" in driver.find_element("tag name", "body").text
    finally:
        driver.quit()

