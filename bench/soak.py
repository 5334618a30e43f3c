"""The soak: the chaos mix of tests/fault/chaos.py at load for a chosen time, tracking p99 step
latency, RSS (broker and workers), the broker's open files and worker restarts over time. Writes
bench/results/soak-<date>.{json,png} and prints the slope of each series over the second half of
the run: leaks show as slopes. Run through `bench/soak --minutes M`."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "fault"), str(ROOT / "tests" / "support"), str(ROOT / "python")]

from chaos import Chaos  # noqa: E402


def slope_per_minute(ts, ys):
    """Least-squares slope of ys over ts (seconds), per minute; 0 when there is too little data."""
    n = len(ts)
    if n < 3:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 0.0 if var == 0 else 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var


def p99_windows(ops, t0, window):
    """p99 latency (ms) of successful steps per `window` seconds."""
    buckets = {}
    for o in ops:
        if o.kind == "step" and o.outcome == "ok":
            buckets.setdefault(int((o.start - t0) // window), []).append((o.end - o.start) * 1000.0)
    out = []
    for k in sorted(buckets):
        xs = sorted(buckets[k])
        out.append(((k + 0.5) * window, xs[min(len(xs) - 1, int(0.99 * len(xs)))], len(xs)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nemesis-interval", type=float, default=2.0, help="seconds between nemesis faults")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    seconds = args.minutes * 60.0
    print(f"[soak] {args.minutes:g} min of the chaos mix on {args.workers} workers", flush=True)
    chaos = Chaos(Path(tempfile.mkdtemp(prefix="gymfarm-soak-")), workers=args.workers, seed=args.seed,
                  nemesis_interval=args.nemesis_interval, huge_obs=False)
    last = [time.monotonic()]

    def progress(snap):
        if time.monotonic() - last[0] >= 30:
            last[0] = time.monotonic()
            print(f"[soak] t={snap['t']:.0f}s broker RSS {snap['broker_rss'] / 2**20:.1f} MB, "
                  f"{snap['broker_fds']} files, workers RSS {snap['worker_rss'] / 2**20:.0f} MB, "
                  f"{snap['restarts']} restarts, {len(chaos.history.ops)} operations", flush=True)

    try:
        chaos.run(seconds, broker_restart=False, on_sample=progress)
    finally:
        chaos.stop()
    h = chaos.history
    violations = chaos.check()
    print(h.summary())
    samples = [s for s in h.samples if s.get("broker_rss")]
    lat = p99_windows(h.ops, h.t0, max(5.0, seconds / 60))
    half = seconds / 2
    second = [s for s in samples if s["t"] >= half]
    slopes = {
        "broker_rss_mb_per_min": slope_per_minute([s["t"] for s in second], [s["broker_rss"] / 2**20 for s in second]),
        "worker_rss_mb_per_min": slope_per_minute([s["t"] for s in second], [s["worker_rss"] / 2**20 for s in second]),
        "broker_fds_per_min": slope_per_minute([s["t"] for s in second], [s["broker_fds"] for s in second]),
        "p99_ms_per_min": slope_per_minute([t for t, _, _ in lat if t >= half], [p for t, p, _ in lat if t >= half]),
    }
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"minutes": args.minutes, "workers": args.workers, "seed": args.seed, "summary": h.summary(),
              "violations": violations, "slopes_second_half": slopes, "p99_ms": lat,
              "samples": [{k: s[k] for k in ("t", "broker_rss", "broker_fds", "worker_rss", "restarts", "zombies")}
                          for s in samples]}
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(result, indent=1))
    plot(samples, lat, args.out / f"soak-{stamp}.png", f"gymfarm soak: {args.minutes:g} min, {args.workers} workers")
    print("[soak] slopes over the second half: " + ", ".join(f"{k}={v:+.3f}" for k, v in slopes.items()))
    print(f"[soak] wrote {args.out / f'soak-{stamp}.json'} and .png")
    for v in violations[:20]:
        print("[soak] VIOLATION:", v)
    return 1 if violations else 0


def plot(samples, lat, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ts = [s["t"] / 60 for s in samples]
    ax[0].plot([t / 60 for t, _, _ in lat], [p for _, p, _ in lat], marker=".")
    ax[0].set_ylabel("step p99 (ms)")
    ax[1].plot(ts, [s["broker_rss"] / 2**20 for s in samples], label="broker")
    ax[1].plot(ts, [s["worker_rss"] / 2**20 for s in samples], label="all workers")
    ax[1].set_ylabel("RSS (MB)")
    ax[1].legend()
    ax[2].plot(ts, [s["broker_fds"] for s in samples])
    ax[2].set_ylabel("broker open files")
    ax[3].plot(ts, [s["restarts"] for s in samples])
    ax[3].set_ylabel("worker restarts\n(cumulative)")
    ax[3].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
