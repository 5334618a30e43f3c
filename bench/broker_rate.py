#!/usr/bin/env python3
"""How far one broker goes (docs/scaling.md "How far one client, one farm and one broker go").

One farm on loopback, K C++ load generators (bench/loadgen.cpp) at once, each with its own ZeroMQ
connection and no local socket or slab, so every message passes through the broker:
- broker-ping: pings, which the broker answers itself (its own per-message floor);
- broker-step: CartPole-v1 steps, each routed to a worker and back (K workers, one env each).
For K = 1, 2, 4 clients, alternating over --cycles, with the farm's broker busy-polling
(--spin-us 200, the default) and not (--spin-us 0): requests per second in all, and the broker
process's CPU time per request (its whole process: the broker thread, ZeroMQ's I/O thread and the
idle gateway), from /proc, with the machine's load. The CPU per request is what says how far a
broker goes on a machine with free cores: about 1 / (CPU s per request) requests per second per
core the broker's thread can use. Writes bench/results/broker-rate-<time>.json and .md.

    .venv/bin/python bench/broker_rate.py [--requests 20000] [--cycles 3] [--clients 1,2,4]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from harness import LOADGEN, ROOT, TMP, cpu_s, log


def thread_cpu(pid):
    """CPU seconds of the farm process's threads: the broker's loop (the main thread), ZeroMQ's
    background threads, and the rest (the gateway's, idle here)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"broker": 0.0, "zmq": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            base = f"/proc/{pid}/task/{tid}"
            name = Path(f"{base}/comm").read_text().strip()
            fields = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "broker" if int(tid) == pid else "zmq" if name.startswith("ZMQbg") else "other"
        out[key] += (int(fields[11]) + int(fields[12])) / tick
    return out


def run_clients(endpoint, mode, k, n):
    """K load generators at once; the aggregate rate over the slowest one's wall time."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([str(LOADGEN), mode, endpoint, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(k)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"gymfarm-loadgen {mode}: {err.strip()}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000, help="per client per run")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    ks = [int(k) for k in args.clients.split(",")]
    from farm_fixture import FarmProcess

    rows = []
    for spin in ("200", "0"):
        farm = FarmProcess(TMP / f"broker-rate-{spin}", workers=max(ks), args=["--spin-us", spin])
        try:
            for cycle in range(args.cycles):
                for k in ks:
                    for mode in ("broker-ping", "broker-step"):
                        c0, t0 = cpu_s([farm.pid]), thread_cpu(farm.pid)
                        outs, wall = run_clients(farm.endpoint, mode, k, args.requests)
                        cpu = cpu_s([farm.pid]) - c0
                        threads = {key: v - t0[key] for key, v in thread_cpu(farm.pid).items()}
                        # each generator's own timed window; the sum of their rates is the farm's
                        rate = sum(o["per_s"] for o in outs)
                        # the broker's CPU over everything it answered (warm-ups included)
                        answered = k * (args.requests + min(args.requests // 10 + 1, 200))
                        row = {"spin_us": int(spin), "cycle": cycle, "clients": k, "mode": mode, "per_s": rate,
                               "p50_us": statistics.median(o["p50_us"] for o in outs),
                               "broker_cpu_us_per_request": cpu / answered * 1e6, "broker_cpu_share": cpu / wall,
                               "loop_cpu_us_per_request": threads["broker"] / answered * 1e6,
                               "zmq_cpu_us_per_request": threads["zmq"] / answered * 1e6,
                               "load1": os.getloadavg()[0]}
                        rows.append(row)
                        log(f"spin {spin} us, cycle {cycle + 1}, {k} client(s), {mode}: {rate:,.0f} requests/s, "
                            f"p50 {row['p50_us']:.0f} us, broker CPU {row['broker_cpu_us_per_request']:.1f} us a "
                            f"request ({row['loop_cpu_us_per_request']:.1f} its loop, "
                            f"{row['zmq_cpu_us_per_request']:.1f} ZeroMQ's I/O thread; "
                            f"{row['broker_cpu_share']:.0%} of a core), load {row['load1']:.1f}")
        finally:
            farm.stop()

    def med(spin, k, mode, key):
        return statistics.median(r[key] for r in rows if (r["spin_us"], r["clients"], r["mode"]) == (spin, k, mode))

    lines = [f"{os.cpu_count()} cores, load {min(r['load1'] for r in rows):.1f}-{max(r['load1'] for r in rows):.1f}; "
             f"medians of {args.cycles} cycles of {args.requests:,} requests per client", "",
             "| broker spin | clients | pings/s | broker CPU per ping | steps/s (routed) | broker CPU per step "
             "(its loop + ZeroMQ I/O) | step p50 |", "|---|---|---|---|---|---|---|"]
    for spin in (200, 0):
        for k in ks:
            lines.append(
                f"| {spin} us | {k} | {med(spin, k, 'broker-ping', 'per_s'):,.0f} "
                f"| {med(spin, k, 'broker-ping', 'broker_cpu_us_per_request'):.1f} us "
                f"| {med(spin, k, 'broker-step', 'per_s'):,.0f} "
                f"| {med(spin, k, 'broker-step', 'broker_cpu_us_per_request'):.1f} us "
                f"({med(spin, k, 'broker-step', 'loop_cpu_us_per_request'):.1f} + "
                f"{med(spin, k, 'broker-step', 'zmq_cpu_us_per_request'):.1f}) "
                f"| {med(spin, k, 'broker-step', 'p50_us'):.0f} us |")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"broker-rate-{stamp}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    (out / f"broker-rate-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
