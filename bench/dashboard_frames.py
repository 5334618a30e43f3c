#!/usr/bin/env python3
"""What watching an env on the dashboard costs its steps (docs/operations.md "Dashboard").

One farm, one shared CartPole-v1 (render_mode rgb_array) stepped back to back by one native
client, in six modes, alternating, all in this run: no viewer; one viewer of the live stream
/dashboard/stream/<id> (what the page does: one multipart response, a frame each 200 ms); 8 such
viewers; one viewer polling /dashboard/frames/<id> every 500 ms (the page's way before the
stream); 8 viewers at that rate; and one viewer polling back to back (the gateway's frame cache
bounds what the env pays to one render per 200 ms, whatever the viewers). The viewers run in
another process, so they do not share this one's GIL with the stepping client. Each cycle runs
every mode for --seconds; the report gives each mode's medians: steps/s, frames/s served, the
env's renders/s (the broker's count of `render` answers), the CPU share of the farm's own process
(broker and gateway: PNG encoding, the streams' writes) and of the viewers' process, and the
ratio to no viewer. No viewer costs nothing by construction (no code runs for an instance no one
watches): its row is the baseline, and its spread over the cycles is the noise. Writes
bench/results/<time>-dashboard-frames.json and .md.

    .venv/bin/python bench/dashboard_frames.py [--seconds 5] [--cycles 3]
"""
import argparse
import datetime
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from farm_fixture import FarmProcess  # noqa: E402
from harness import cpu_s  # noqa: E402


def log(msg):
    print(f"[dashboard-frames] {msg}", flush=True)


def viewer(url, period, stop, frames):
    s = requests.Session()
    while not stop.is_set():
        t = time.monotonic()
        r = s.get(url, timeout=30)
        if r.status_code == 200:
            with frames.get_lock():
                frames.value += 1
        wait = period - (time.monotonic() - t)
        if wait > 0:
            stop.wait(wait)


STREAM_PART = b"Content-Type: image/png"


def stream_viewer(url, period, stop, frames):
    """One viewer of /dashboard/stream/<id>: counts the frames (parts) as they come. A raw socket:
    requests' iter_content waits to fill its chunk, so it would count late."""
    del period  # the gateway paces the stream
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        tail = b""
        while not stop.is_set():
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            data = tail + chunk
            n = data.count(STREAM_PART)
            if n:
                with frames.get_lock():
                    frames.value += n
            cut = data.rfind(STREAM_PART)  # a part's header split across two reads is counted once
            tail = data[cut + len(STREAM_PART):] if cut >= 0 else data
            tail = tail[-len(STREAM_PART):]


def viewers_process(url, n, period, stop, frames):
    target = stream_viewer if "/stream/" in url else viewer
    threads = [threading.Thread(target=target, args=(url, period, stop, frames)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def renders(c):
    return c.call("stats")["answers"].get("render", {}).get("count", 0)


def run_mode(c, farm_pid, instance, url, viewers, period, seconds):
    """Steps for `seconds` while `viewers` watch `url`: steps/s, frames/s served, the env's renders/s,
    and the CPU share of the farm's own process (broker and gateway) and of the viewers."""
    ctx = multiprocessing.get_context("spawn")
    stop, frames = ctx.Event(), ctx.Value("q", 0)
    proc = None
    if viewers:
        proc = ctx.Process(target=viewers_process, args=(url, viewers, period, stop, frames), daemon=True)
        proc.start()
        deadline = time.monotonic() + 30
        while frames.value == 0 and time.monotonic() < deadline:  # viewers polling before the clock starts
            time.sleep(0.05)
    r0, farm0, view0 = renders(c), cpu_s([farm_pid]), cpu_s([proc.pid]) if proc else 0.0
    steps, t0, f0 = 0, time.monotonic(), frames.value
    while time.monotonic() - t0 < seconds:
        r = c.call("step", instance, {"action": steps % 2})
        steps += 1
        if r["terminated"] or r["truncated"]:
            c.call("reset", instance, {})
    elapsed = time.monotonic() - t0
    served = frames.value - f0
    out = {"steps_per_s": steps / elapsed, "frames_per_s": served / elapsed,
           "renders_per_s": (renders(c) - r0) / elapsed,
           "farm_cpu": (cpu_s([farm_pid]) - farm0) / elapsed,
           "viewer_cpu": (cpu_s([proc.pid]) - view0) / elapsed if proc else 0.0}
    stop.set()
    if proc:
        proc.join(30)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    # (name, viewers, poll period, route): "stream" viewers hold /dashboard/stream/, the others poll
    modes = [("no viewer", 0, 0.0, "frames"), ("1 stream viewer", 1, 0.0, "stream"),
             ("8 stream viewers", 8, 0.0, "stream"), ("1 viewer, every 500 ms", 1, 0.5, "frames"),
             ("8 viewers, every 500 ms", 8, 0.5, "frames"), ("1 viewer, back to back", 1, 0.0, "frames")]
    # 8 stream viewers from one address: past the default bound of 4 per address
    farm = FarmProcess(Path(tempfile.mkdtemp(prefix="gf-bench-")), workers=1,
                       args=["--dashboard-streams-per-client", "8"])
    keys = ("steps_per_s", "frames_per_s", "renders_per_s", "farm_cpu", "viewer_cpu")
    results = {name: {k: [] for k in keys} for name, _, _, _ in modes}
    spread = results["no viewer"]["steps_per_s"]
    try:
        root = farm.rest_url.removesuffix("/v1/")
        with farm.connect() as c:
            instance = c.call("make", body={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"},
                                            "shared": True})["instance_id"]
            c.call("reset", instance, {"seed": 0})
            url = f"{root}/dashboard/frames/{instance}"
            assert requests.get(url, timeout=30).status_code == 200
            run_mode(c, farm.pid, instance, url, 0, 0, 1.0)  # warm up
            urls = {"frames": url, "stream": f"{root}/dashboard/stream/{instance}"}
            # what one render costs the env's worker: a render's round trip against a step's
            timings = {}
            for verb, body in (("render", {}), ("step", {"action": 0})):
                ts = []
                for _ in range(200):
                    t = time.perf_counter()
                    r = c.call(verb, instance, body)
                    ts.append(time.perf_counter() - t)
                    if verb == "step" and (r["terminated"] or r["truncated"]):
                        c.call("reset", instance, {})
                timings[verb] = statistics.median(ts)
            log(f"render {timings['render'] * 1e3:.2f} ms, step {timings['step'] * 1e3:.3f} ms (median round trips)")
            for cycle in range(args.cycles):
                for name, n, period, route in modes:
                    m = run_mode(c, farm.pid, instance, urls[route], n, period, args.seconds)
                    for k in keys:
                        results[name][k].append(m[k])
                    log(f"cycle {cycle + 1}: {name}: {m['steps_per_s']:.0f} steps/s, {m['frames_per_s']:.1f} frames/s "
                        f"served, {m['renders_per_s']:.1f} renders/s, farm process CPU {m['farm_cpu']:.0%}, "
                        f"viewers' CPU {m['viewer_cpu']:.0%}")
    finally:
        farm.stop()
    base = statistics.median(results["no viewer"]["steps_per_s"])
    summary = []
    for name, _, _, _ in modes:
        row = {"mode": name} | {k: round(statistics.median(results[name][k]), 3) for k in keys}
        row["ratio_to_no_viewer"] = round(row["steps_per_s"] / base, 3)
        summary.append(row)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-dashboard-frames.json").write_text(
        json.dumps({"seconds": args.seconds, "cycles": args.cycles, "render_s": timings["render"],
                    "step_s": timings["step"], "summary": summary, "runs": results}, indent=2))
    bound = 5 * timings["render"]  # the cache's at most 5 renders/s, each costing about its round trip
    lines = [f"render {timings['render'] * 1e3:.2f} ms, step {timings['step'] * 1e3:.3f} ms (median round trips); "
             f"at most 5 renders/s: at most {bound * 100:.1f}% of the env's time", "",
             f"no viewer: {min(spread):.0f}-{max(spread):.0f} steps/s over the cycles (the noise)", "",
             "| mode | steps/s (median) | frames/s served | env renders/s | farm process CPU | viewers' CPU "
             "| ratio to no viewer |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['mode']} | {s['steps_per_s']:.0f} | {s['frames_per_s']:.1f} | {s['renders_per_s']:.1f} "
              f"| {s['farm_cpu']:.0%} | {s['viewer_cpu']:.0%} | {s['ratio_to_no_viewer']:.3f} |" for s in summary]
    (out / f"{stamp}-dashboard-frames.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
