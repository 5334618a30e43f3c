"""The elastic pool, measured (docs/benchmarks.md "P7b: the elastic pool"):

    .venv/bin/python bench/pool.py [--makes N] [--live N] [--out DIR]

1. A `make` served by a warm worker against one that has to fork a new worker from the zygote,
   alternating in pairs in one run (p50, p99 of each, and their ratio).
2. `--live N` one-env-per-process CartPoles made by one client from a farm with default settings
   (default 2000; 0 skips it): the time to make them all, a step through each, the farm's PSS.

Writes bench/results/pool-<date>.json. Starts and stops its farms by pid, on 127.0.0.1.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "python")]
from farm_fixture import FarmProcess  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def make_latencies(makes: int, tmp: Path):
    """Warm makes (a free worker waits) and forking makes (none does), alternated."""
    farm = FarmProcess(tmp / "latency", workers=2, args=["--worker-idle-grace", "0"])
    warm, fork = [], []
    try:
        with farm.connect() as c:
            for i in range(makes):
                t = time.perf_counter()
                e = c.make("CartPole-v1")  # one of the two warm workers
                warm.append(time.perf_counter() - t)
                held = [c.make("CartPole-v1")]  # the second warm worker
                t = time.perf_counter()
                held.append(c.make("CartPole-v1"))  # no free worker: the pool forks one
                fork.append(time.perf_counter() - t)
                for h in held + [e]:
                    h.close()
                # let the grown worker retire (grace 0) so that the next round forks again
                deadline = time.monotonic() + 10
                while len(c.stats()["workers"]) > 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                if i % 20 == 0:
                    print(f"[pool] {i}/{makes} pairs", flush=True)
    finally:
        farm.stop()
    ms = lambda xs: {"p50_ms": 1e3 * pct(xs, 50), "p99_ms": 1e3 * pct(xs, 99), "n": len(xs)}  # noqa: E731
    return {"warm": ms(warm), "fork": ms(fork), "fork_over_warm_p50": pct(fork, 50) / pct(warm, 50)}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deaths(stats) -> dict:
    """Restarts of live slots and the budget's recent log: any worker that died while the pool grew."""
    return {
        "restarts": sum(w["restarts"] for w in stats["workers"]),
        "recent": [r.get("reason", "") for r in stats["recent_restarts"]][-5:],
        "budget_used": stats["restart_budget"]["used"],
    }


def many_live(n: int, tmp: Path):
    farm = FarmProcess(tmp / "live", workers=4, timeout=300)
    out = {"n": n}
    try:
        with farm.connect(timeout=300) as c:
            broker = c.stats()["pid"]
            cpu0 = cpu_s(broker)
            t = time.perf_counter()
            ids = []
            while len(ids) < n:
                batch = c.make_many("CartPole-v1", min(50, n - len(ids)))
                ids += [m["instance_id"] for m in batch]
                if len(ids) % 250 == 0:
                    print(f"[pool] {len(ids)}/{n} live, {time.perf_counter() - t:.1f} s", flush=True)
            out["make_all_s"] = time.perf_counter() - t
            out["broker_cpu_s_making"] = cpu_s(broker) - cpu0
            # the pool at rest, all n alive: what the heartbeats cost the broker
            # (stats reads every worker's smaps_rollup, so it stays out of the CPU window)
            time.sleep(5)
            hb0, th0 = c.stats()["heartbeats"]["received"], time.perf_counter()
            cpu1, t1 = cpu_s(broker), time.perf_counter()
            time.sleep(10)
            out["broker_cpu_idle_pct"] = 100 * (cpu_s(broker) - cpu1) / (time.perf_counter() - t1)
            idle = c.stats()
            out["heartbeats"] = dict(idle["heartbeats"])
            out["heartbeats_per_s_idle"] = (idle["heartbeats"]["received"] - hb0) / (time.perf_counter() - th0)
            out["deaths_after_make"] = deaths(idle)
            c.call_many([("reset", i, {"seed": 0}) for i in ids], timeout=300)
            t = time.perf_counter()
            results = c.step_batch([(i, 0) for i in ids], timeout=300)
            out["one_step_each_s"] = time.perf_counter() - t
            out["steps_ok"] = sum(isinstance(r, dict) for r in results)
            stats = c.stats()
            out["workers"] = len(stats["workers"])
            out["workers_live_state"] = sum(w["state"] in ("idle", "assigned") for w in stats["workers"])
            out["pss_mb_total"] = sum(w["pss_bytes"] for w in stats["workers"]) / 2**20
            out["pss_mb_per_worker"] = out["pss_mb_total"] / max(1, out["workers"])
            out["rss_mb_total"] = sum(w["rss_bytes"] for w in stats["workers"]) / 2**20
            out["broker_rss_mb"] = int(
                next(line.split()[1] for line in Path(f"/proc/{broker}/status").read_text().splitlines()
                     if line.startswith("VmRSS:"))) / 1024
            out["deaths_total"] = deaths(stats)
            c.close_many(ids, timeout=300)
    finally:
        farm.stop(timeout=120)
        try:
            log = farm.log()
            out["killed_silent"] = log.count("is silent, killing it")
            out["timed_out"] = log.count("timed out in")
        except OSError:
            pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--makes", type=int, default=100)
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--no-make-latency", action="store_true", help="only the --live scenario")
    a = ap.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="gf-pool-"))
    result = {"when": datetime.datetime.now().isoformat(timespec="seconds")}
    if not a.no_make_latency:
        result["make"] = make_latencies(a.makes, tmp)
        print(json.dumps(result["make"], indent=1), flush=True)
    if a.live:
        result["live"] = many_live(a.live, tmp)
        print(json.dumps(result["live"], indent=1), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)  # the farms' logs and runtime dirs; the farms are stopped
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"pool-{datetime.datetime.now():%Y-%m-%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"[pool] wrote {path}")


if __name__ == "__main__":
    main()
