#!/usr/bin/env python3
"""What watching an env on the dashboard costs its steps (docs/operations.md "Dashboard").

One farm, one shared CartPole-v1 (render_mode rgb_array) stepped back to back by one native
client, in four modes, alternating, all in this run: no viewer; one viewer polling
/dashboard/frames/<id> every 500 ms (what the page does); 8 viewers at that rate; and one viewer
polling back to back (the gateway's frame cache bounds what the env pays to one render per
200 ms, whatever the viewers). The viewers run in another process, so they do not share this
one's GIL with the stepping client. Each cycle runs every mode for --seconds; the report gives
the median steps/s of each mode, the frames/s served and the ratio to no viewer. No viewer costs
nothing by construction (no code runs for an instance no one watches): its row is the baseline,
and its spread over the cycles is the noise. Writes bench/results/<time>-dashboard-frames.json and .md.

    .venv/bin/python bench/dashboard_frames.py [--seconds 5] [--cycles 3]
"""
import argparse
import datetime
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from farm_fixture import FarmProcess  # noqa: E402


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


def viewers_process(url, n, period, stop, frames):
    threads = [threading.Thread(target=viewer, args=(url, period, stop, frames)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_mode(c, instance, url, viewers, period, seconds):
    ctx = multiprocessing.get_context("spawn")
    stop, frames = ctx.Event(), ctx.Value("q", 0)
    proc = None
    if viewers:
        proc = ctx.Process(target=viewers_process, args=(url, viewers, period, stop, frames), daemon=True)
        proc.start()
        deadline = time.monotonic() + 30
        while frames.value == 0 and time.monotonic() < deadline:  # viewers polling before the clock starts
            time.sleep(0.05)
    steps, t0, f0 = 0, time.monotonic(), frames.value
    while time.monotonic() - t0 < seconds:
        r = c.call("step", instance, {"action": steps % 2})
        steps += 1
        if r["terminated"] or r["truncated"]:
            c.call("reset", instance, {})
    elapsed = time.monotonic() - t0
    served = frames.value - f0
    stop.set()
    if proc:
        proc.join(30)
    return steps / elapsed, served / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    modes = [("no viewer", 0, 0.0), ("1 viewer, every 500 ms", 1, 0.5), ("8 viewers, every 500 ms", 8, 0.5),
             ("1 viewer, back to back", 1, 0.0)]
    farm = FarmProcess(Path(tempfile.mkdtemp(prefix="gf-bench-")), workers=1)
    results = {name: {"steps_per_s": [], "frames_per_s": []} for name, _, _ in modes}
    spread = results["no viewer"]["steps_per_s"]
    try:
        root = farm.rest_url.removesuffix("/v1/")
        with farm.connect() as c:
            instance = c.call("make", body={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"},
                                            "shared": True})["instance_id"]
            c.call("reset", instance, {"seed": 0})
            url = f"{root}/dashboard/frames/{instance}"
            assert requests.get(url, timeout=30).status_code == 200
            run_mode(c, instance, url, 0, 0, 1.0)  # warm up
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
                for name, n, period in modes:
                    sps, fps = run_mode(c, instance, url, n, period, args.seconds)
                    results[name]["steps_per_s"].append(sps)
                    results[name]["frames_per_s"].append(fps)
                    log(f"cycle {cycle + 1}: {name}: {sps:.0f} steps/s, {fps:.1f} frames/s served")
    finally:
        farm.stop()
    base = statistics.median(results["no viewer"]["steps_per_s"])
    summary = []
    for name, _, _ in modes:
        med = statistics.median(results[name]["steps_per_s"])
        summary.append({"mode": name, "steps_per_s": round(med, 1),
                        "frames_per_s": round(statistics.median(results[name]["frames_per_s"]), 2),
                        "ratio_to_no_viewer": round(med / base, 3)})
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
             "| mode | steps/s (median) | frames/s served | ratio to no viewer |", "|---|---|---|---|"]
    lines += [f"| {s['mode']} | {s['steps_per_s']:.0f} | {s['frames_per_s']:.1f} | {s['ratio_to_no_viewer']:.3f} |"
              for s in summary]
    (out / f"{stamp}-dashboard-frames.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
