"""Monitor recordings with video through the REST dialects (docs/dialects.md, "Monitor video"):
monitor/start wraps the instance's env in Gymnasium's RecordVideo in its worker, writing MP4s of
the episodes gym Monitor's `video_callable` picks into the client's directory mapped inside
--monitor-dir; monitor/close flushes them. The MP4s are decoded with the ffmpeg imageio-ffmpeg
ships and must hold one frame per step plus the reset's."""
import json
from pathlib import Path

import imageio_ffmpeg
import pytest
import requests

from farm_fixture import FarmProcess


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor_video")
    f = FarmProcess(tmp, workers=4, args=["--monitor-dir", str(tmp / "monitor"), "--gym-server-port", "0",
                                          "--gym-server-files-port", "0", "--step-timeout", "60"])
    f.tmp = tmp
    f.monitor_dir = tmp / "monitor"
    f.api = f.rest_url.rstrip("/").removesuffix("/v1")
    f.gs_api = f.gym_server_url.rstrip("/").removesuffix("/v1")
    f.gs_files = f.gym_server_files_url.rstrip("/")
    yield f
    assert f.stop() == 0, f.log()


def post(base, route, body=None, status=(200, 204)):
    r = requests.post(base + route, data=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"}, timeout=120)
    assert r.status_code in status, (route, r.status_code, r.text)
    return r.json() if r.content else None


def play(base, iid, action, steps_key="done", max_steps=2000):
    """One episode: reset, then `action(k)` until done; returns its length."""
    post(base, f"/v1/envs/{iid}/reset/", {} if steps_key == "done" else {"render": False})
    for n in range(1, max_steps + 1):
        if post(base, f"/v1/envs/{iid}/step/", {"action": action(n)})["done"]:
            return n
    raise AssertionError("the episode did not end")


def frames(path: Path) -> int:
    n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return n


def videos(directory: Path):
    return sorted(directory.glob("openaigym.video.*.mp4"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def check_manifest(directory: Path, iid: str, recorded: dict):
    """The manifest lists each video with its metadata, as gym's Monitor did; every listed MP4
    decodes to the frames of its episode (reset frame + one per step)."""
    manifest = json.loads((directory / f"openaigym.manifest.{iid}.manifest.json").read_text())
    listed = {v: json.loads((directory / m).read_text()) for v, m in manifest["videos"]}
    assert {meta["episode_id"] for meta in listed.values()} == set(recorded)
    for name, meta in listed.items():
        assert meta["content_type"] == "video/mp4"
        assert meta["frames"] == frames(directory / name) == recorded[meta["episode_id"]] + 1


def test_cartpole_default_schedule_is_gym_monitors(farm):
    iid = post(farm.api, "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
    # no video_callable: gym Monitor's default, the capped cubic schedule (episodes 0, 1, 8, ...)
    post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": "cartpole", "force": True})
    lengths = [play(farm.api, iid, lambda k, e=e: (k + e) % 2) for e in range(3)]
    post(farm.api, f"/v1/envs/{iid}/monitor/close/")
    d = farm.monitor_dir / "cartpole"
    got = videos(d)
    assert [p.name for p in got] == [f"openaigym.video.{iid}-episode-0.mp4", f"openaigym.video.{iid}-episode-1.mp4"]
    assert [frames(p) for p in got] == [lengths[0] + 1, lengths[1] + 1]
    check_manifest(d, iid, {0: lengths[0], 1: lengths[1]})
    stats = json.loads((d / f"openaigym.episode_batch.{iid}.stats.json").read_text())
    assert stats["episode_lengths"] == lengths  # the statistics stay the gateway's, as before
    # the env goes on unwrapped after close: more episodes write nothing
    play(farm.api, iid, lambda k: k % 2)
    assert len(videos(d)) == 2
    post(farm.api, f"/v1/envs/{iid}/close/")


def test_cartpole_long_episode_keeps_every_frame(farm):
    """A 500-step episode (frames / fps not exact in floating point, where moviepy's encoder
    drops the last frame) decodes to 501 frames."""
    iid = post(farm.api, "/v1/envs/", {"env_id": "CartPole-v1", "seed": 3})["instance_id"]
    post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": "long", "video_callable": True})
    obs = post(farm.api, f"/v1/envs/{iid}/reset/")["observation"]
    n, done = 0, False
    while not done and n < 600:
        r = post(farm.api, f"/v1/envs/{iid}/step/", {"action": 1 if obs[2] + 0.5 * obs[3] > 0 else 0})
        obs, done, n = r["observation"], r["done"], n + 1
    post(farm.api, f"/v1/envs/{iid}/monitor/close/")
    assert n == 500, n  # a balanced pole, to the time limit
    (only,) = videos(farm.monitor_dir / "long")
    assert frames(only) == n + 1
    post(farm.api, f"/v1/envs/{iid}/close/")


def test_mujoco_every_episode(farm):
    iid = post(farm.api, "/v1/envs/", {"env_id": "InvertedPendulum-v5"})["instance_id"]
    post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": "mujoco/pendulum", "video_callable": True})
    lengths = [play(farm.api, iid, lambda k: [0.0]) for _ in range(2)]
    post(farm.api, f"/v1/envs/{iid}/monitor/close/")
    d = farm.monitor_dir / "mujoco" / "pendulum"
    assert [frames(p) for p in videos(d)] == [n + 1 for n in lengths]
    check_manifest(d, iid, dict(enumerate(lengths)))
    post(farm.api, f"/v1/envs/{iid}/close/")


def test_video_callable_false_and_every_nth(farm):
    iid = post(farm.api, "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
    post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": "none", "video_callable": False})
    play(farm.api, iid, lambda k: k % 2)
    post(farm.api, f"/v1/envs/{iid}/monitor/close/")
    assert videos(farm.monitor_dir / "none") == []
    assert (farm.monitor_dir / "none" / f"openaigym.episode_batch.{iid}.stats.json").exists()

    post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": "nth", "video_callable": 2})
    lengths = [play(farm.api, iid, lambda k, e=e: (k + e) % 2) for e in range(3)]
    post(farm.api, f"/v1/envs/{iid}/monitor/close/")
    got = videos(farm.monitor_dir / "nth")
    assert [p.stem.rsplit("-", 1)[1] for p in got] == ["0", "2"]
    assert [frames(p) for p in got] == [lengths[0] + 1, lengths[2] + 1]

    for bad in (0, -1, "yes", 1.5, [1]):
        r = requests.post(f"{farm.api}/v1/envs/{iid}/monitor/start/",
                          json={"directory": "bad", "video_callable": bad}, timeout=60)
        assert r.status_code == 400 and "video_callable" in r.json()["message"], (bad, r.text)
    post(farm.api, f"/v1/envs/{iid}/close/")


def test_directory_cannot_write_outside(farm):
    """Client directories are mapped inside --monitor-dir; `..` and absolute paths lead nowhere else."""
    before = {p for p in farm.tmp.parent.rglob("*")} - set(farm.monitor_dir.rglob("*"))
    iid = post(farm.api, "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
    expected = {"../x": "x", "/etc": "etc", "a/../../b": "a/b", "../../../../../tmp/escape": "tmp/escape",
                "..": "default"}
    for directory, inside in expected.items():
        post(farm.api, f"/v1/envs/{iid}/monitor/start/", {"directory": directory, "video_callable": True})
        play(farm.api, iid, lambda k: k % 2)
        post(farm.api, f"/v1/envs/{iid}/monitor/close/")
        d = farm.monitor_dir / inside
        assert len(videos(d)) == 1 and (d / f"openaigym.episode_batch.{iid}.stats.json").exists(), directory
    after = {p for p in farm.tmp.parent.rglob("*")} - set(farm.monitor_dir.rglob("*"))
    assert {p for p in after - before if "openaigym" in p.name or p.suffix == ".mp4"} == set()
    assert not list(Path("/etc").glob("openaigym.*")) and not Path("/tmp/escape").exists()
    post(farm.api, f"/v1/envs/{iid}/close/")


def test_gym_server_dialect_records_video(farm):
    """gym-server's monitor/start {force, resume}: gym Monitor's default schedule, into
    MONITOR-DIR/gym-server/<id>/simulation/, served on its files port as video/mp4."""
    iid = post(farm.gs_api, "/v1/envs/create/", {"environment": "CartPole-v1"}, status=(201,))["instance_id"]
    assert post(farm.gs_api, f"/v1/envs/{iid}/monitor/start/", {"force": True, "resume": False}) == {"message": True}
    lengths = [play(farm.gs_api, iid, lambda k, e=e: (k + e) % 2, steps_key="render") for e in range(2)]
    assert post(farm.gs_api, f"/v1/envs/{iid}/monitor/close/") == {"message": True}
    sim = farm.monitor_dir / "gym-server" / iid / "simulation"
    got = videos(sim)
    assert [frames(p) for p in got] == [n + 1 for n in lengths]
    manifest = json.loads(next(sim.glob("openaigym.manifest.*.manifest.json")).read_text())
    assert [v for v, _ in manifest["videos"]] == [p.name for p in got]
    served = requests.get(f"{farm.gs_files}/{iid}/simulation/{got[0].name}", timeout=30)
    assert served.status_code == 200 and served.headers["Content-Type"] == "video/mp4"
    assert served.content == got[0].read_bytes()
    # force clears the videos with the other monitor files, as gym's Monitor did
    post(farm.gs_api, f"/v1/envs/{iid}/monitor/start/", {"force": True})
    assert videos(sim) == []
    post(farm.gs_api, f"/v1/envs/{iid}/monitor/close/")


def test_statistics_survive_a_crashed_worker(start_farm, tmp_path):
    """The statistics are the gateway's: a worker that dies mid-recording costs the videos it had
    not finished, not the stats file of monitor/close."""
    import os
    import signal

    f = start_farm(workers=1, args=["--monitor-dir", str(tmp_path / "monitor")])
    api = f.rest_url.rstrip("/").removesuffix("/v1")
    iid = post(api, "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
    post(api, f"/v1/envs/{iid}/monitor/start/", {"directory": "crash", "video_callable": True})
    n = play(api, iid, lambda k: k % 2)
    post(api, f"/v1/envs/{iid}/reset/")  # episode 0's video written; episode 1 recording
    (video,) = videos(tmp_path / "monitor" / "crash")
    assert frames(video) == n + 1
    with f.connect() as c:
        (pid,) = [w["pid"] for w in c.stats()["workers"] if w.get("instance") or w.get("instances")]
    os.kill(pid, signal.SIGKILL)
    post(api, f"/v1/envs/{iid}/monitor/close/")
    d = tmp_path / "monitor" / "crash"
    stats = json.loads((d / f"openaigym.episode_batch.{iid}.stats.json").read_text())
    assert stats["episode_lengths"] == [n]
    manifest = json.loads((d / f"openaigym.manifest.{iid}.manifest.json").read_text())
    assert manifest["videos"] == []  # the worker that knew them is gone
