"""Finding: monitor recordings write files, so the `monitor` verb that starts them must not take a
directory from anyone but the gateway, which maps the client's `directory` inside --monitor-dir.
The broker answers `bad_request` to a native client that sends it (only the gateway's in-process
clients may), and the worker itself refuses a directory that is not absolute, normalized, free of
symlinks and existing (worker/host.py monitor_start), and a video name that is not plain."""
import importlib.util
import os
from pathlib import Path

import pytest

import gymfarm

HOST_PY = Path(__file__).resolve().parents[2] / "worker" / "host.py"


def test_native_clients_may_not_send_monitor(start_farm, tmp_path):
    target = tmp_path / "planted"
    target.mkdir()
    f = start_farm(workers=1)
    with f.connect() as c:
        iid = c.call("make", body={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})["instance_id"]
        for body in ({"op": "start", "directory": str(target), "video": 1, "name": "x"}, {"op": "close"}):
            with pytest.raises(gymfarm.BadRequest, match="'monitor' is the gateway's verb"):
                c.call("monitor", iid, body)
        c.call("reset", iid, {})
        for _ in range(3):
            c.call("step", iid, {"action": 0})
        c.call("reset", iid, {})  # a recording would have been written here
        c.call("close", iid)
    assert list(target.iterdir()) == []


@pytest.fixture(scope="module")
def host():
    spec = importlib.util.spec_from_file_location("gymfarm_host_under_test", HOST_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make("i", "CartPole-v1", {"render_mode": "rgb_array"})
    yield mod
    mod.close_all()


def test_worker_refuses_paths_that_are_not_canonical(host, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    for bad in ["relative/dir", "../up", str(real) + "/", str(real) + "/../real", str(tmp_path) + "//real",
                str(real) + "/.", str(link), str(tmp_path / "missing"), "", "/tmp/a\0b", 7, None]:
        with pytest.raises(host.BadRequest):
            host.monitor_start("i", bad, 1, "x")
    assert list(real.iterdir()) == []


def test_worker_refuses_names_that_are_not_plain(host, tmp_path):
    for name in ["../x", "a/b", ".hidden", "", "x" * 65, None, "a b"]:
        with pytest.raises(host.BadRequest):
            host.monitor_start("i", str(tmp_path), 1, name)
    assert list(tmp_path.iterdir()) == []


def test_worker_records_into_a_canonical_directory(host, tmp_path):
    d = os.path.realpath(tmp_path)
    assert host.monitor_start("i", d, 1, "ok")["video"] is True
    host.reset("i", seed=0)
    for n in range(1, 600):
        r = host.step("i", n % 2)
        if r["terminated"] or r["truncated"]:
            break
    (video,) = host.monitor_close("i")["videos"]
    assert video["frames"] == n + 1 and video["file"] == "openaigym.video.ok-episode-0.mp4"
    assert sorted(os.listdir(d)) == sorted([video["file"], video["meta"]])
    assert not isinstance(host._hosted("i").env, host._MonitorVideo)  # unwrapped
