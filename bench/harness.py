"""A first slice of the benchmark harness (issue 7 is open): scenarios P1 and P2 of
performance.md against their baselines, measured in alternating pairs in one run.

    bench/run [--quick] [--pairs N]

P1: one CartPole, sequential steps: gymfarm native client vs AsyncVectorEnv(1) vs in-process.
P2: 16 CartPoles, one batched step per iteration: gymfarm make_vec vs AsyncVectorEnv(16) vs
    SyncVectorEnv(16).
Writes bench/results/<date>.json, .csv and .md. Reports medians and spreads of per-pair ratios.
"""
import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from farm_fixture import FarmProcess  # noqa: E402

import gymfarm  # noqa: E402


def time_steps(step, n):
    lat = []
    for i in range(n):
        t = time.perf_counter()
        step(i)
        lat.append(time.perf_counter() - t)
    return lat


def p1_env(env, n):
    """Sequential single steps of one gymnasium.Env (a RemoteEnv or an in-process one)."""
    env.reset(seed=0)

    def step(i):
        _, _, term, trunc, _ = env.step(i % 2)
        if term or trunc:
            env.reset()
    lat = time_steps(step, n)
    env.close()
    return lat


def p1_async(n):
    env = gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")])
    env.reset(seed=0)
    lat = time_steps(lambda i: env.step(np.array([i % 2])), n)
    env.close()
    return lat


def p2(make_vec, n_iters, n_envs=16):
    env = make_vec()
    env.reset(seed=0)
    acts = np.zeros(n_envs, dtype=np.int64)
    t = time.perf_counter()
    for i in range(n_iters):
        acts[:] = i % 2
        env.step(acts)
    elapsed = time.perf_counter() - t
    env.close()
    return n_iters * n_envs / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and pairs (under two minutes)")
    ap.add_argument("--pairs", type=int, default=None)
    args = ap.parse_args()
    pairs = args.pairs or (3 if args.quick else 5)
    steps = 500 if args.quick else 3000
    iters = 100 if args.quick else 600
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    fp = FarmProcess(tmp, workers=18)
    rows = []
    try:
        farm = fp.connect()
        p1_env(farm.make("CartPole-v1"), 50)  # warm-up, discarded
        p1_async(50)
        for k in range(pairs):
            g, a, i = p1_env(farm.make("CartPole-v1"), steps), p1_async(steps), p1_env(gym.make("CartPole-v1"), steps)
            rows.append({"scenario": "P1", "pair": k, "gymfarm_p50_us": 1e6 * statistics.median(g),
                         "gymfarm_p99_us": 1e6 * float(np.percentile(g, 99)),
                         "async1_p50_us": 1e6 * statistics.median(a), "inprocess_p50_us": 1e6 * statistics.median(i),
                         "ratio_vs_async": statistics.median(a) / statistics.median(g)})
            print(f"[bench] P1 pair {k}: gymfarm p50 {rows[-1]['gymfarm_p50_us']:.0f} us, "
                  f"AsyncVectorEnv(1) p50 {rows[-1]['async1_p50_us']:.0f} us", flush=True)
        for k in range(pairs):
            g = p2(lambda: farm.make_vec("CartPole-v1", num_envs=16), iters)
            a = p2(lambda: gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 16), iters)
            s = p2(lambda: gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 16), iters)
            rows.append({"scenario": "P2", "pair": k, "gymfarm_steps_per_s": g, "async16_steps_per_s": a,
                         "sync16_steps_per_s": s, "ratio_vs_async": g / a})
            print(f"[bench] P2 pair {k}: gymfarm {g:,.0f}, AsyncVectorEnv(16) {a:,.0f}, SyncVectorEnv(16) {s:,.0f} "
                  "env-steps/s", flush=True)
        farm.close()
    finally:
        fp.stop()
    load_after = os.getloadavg()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    summary = {}
    for sc in ("P1", "P2"):
        ratios = [r["ratio_vs_async"] for r in rows if r["scenario"] == sc]
        summary[sc] = {"ratio_vs_async_median": statistics.median(ratios), "ratio_min": min(ratios),
                       "ratio_max": max(ratios)}
    meta = {"machine": f"{os.cpu_count()} cores", "python": sys.version.split()[0], "gymnasium": gym.__version__,
            "load_before": load_before, "load_after": load_after, "pairs": pairs, "quick": args.quick,
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()}
    (out / f"{stamp}.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=2))
    with open(out / f"{stamp}.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r})
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    md = ["| scenario | median ratio vs AsyncVectorEnv | spread | target |", "|---|---|---|---|",
          f"| P1 one env, sequential | {summary['P1']['ratio_vs_async_median']:.2f}x | "
          f"{summary['P1']['ratio_min']:.2f}–{summary['P1']['ratio_max']:.2f} | ≥ 2.5x |",
          f"| P2 16 envs, batched | {summary['P2']['ratio_vs_async_median']:.2f}x | "
          f"{summary['P2']['ratio_min']:.2f}–{summary['P2']['ratio_max']:.2f} | ≥ 4x |"]
    (out / f"{stamp}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"[bench] results in bench/results/{stamp}.{{json,csv,md}}; load {load_before[0]:.2f} -> {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
