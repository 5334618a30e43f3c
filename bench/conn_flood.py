#!/usr/bin/env python3
"""P12: the gateway holding 10,000 idle connections while one client steps.

One farm; the C++ load generator's Gymie WebSocket and gym-http-api REST step p50 on an unloaded
farm and with N idle TCP connections held open to both HTTP ports (from 127.0.0.2, 127.0.0.3,
...: each address stays under --max-connections-per-client), alternating, all in this run. Each
cycle: an unloaded run, N connections opened, a loaded run, the connections closed; the ratio is
the median loaded p50 over the median unloaded p50; target <= 1.5. Writes bench/results/<time>-conn-flood.json and .md.

    .venv/bin/python bench/conn_flood.py [--connections 10000] [--steps 2000] [--cycles 5]
"""
import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from farm_fixture import FarmProcess  # noqa: E402

BIN = Path(os.environ.get("GYMFARM_BIN_DIR", ROOT / "build" / "bin"))
LOADGEN = BIN / "gymfarm-loadgen"
PER_ADDRESS = 50  # under the default --max-connections-per-client (64)


def log(msg):
    print(f"[conn-flood] {msg}", flush=True)


def loadgen(*args, timeout=300):
    r = subprocess.run([str(LOADGEN), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"gymfarm-loadgen {' '.join(map(str, args))}: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def hold(n, ports):
    """Opens n idle connections, PER_ADDRESS from each of 127.0.0.2, 127.0.0.3, ..."""
    socks = []
    for i in range(n):
        a = 2 + i // PER_ADDRESS
        source = f"127.0.{a // 250}.{a % 250 + 2}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", ports[i % len(ports)]))
        socks.append(s)
    return socks


def measure(gport, rport, steps):
    g = loadgen("gymie", "127.0.0.1", gport, "/gym", steps)
    r = loadgen("http", "127.0.0.1", rport, steps)
    return {"gymie_p50_us": g["p50_us"], "gymie_p99_us": g["p99_us"],
            "rest_p50_us": r["p50_us"], "rest_p99_us": r["p99_us"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--cycles", type=int, default=5, help="unloaded/loaded pairs (and one more unloaded run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 256:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.connections} connections")

    tmp = Path(tempfile.mkdtemp(prefix="gf-conn-flood-"))
    fp = FarmProcess(tmp / "farm", workers=2,
                     args=["--max-connections", str(args.connections + 1000), "--http-idle-timeout", "3600"])
    gport = int(fp.gymie_url.split(":")[2].split("/")[0])
    rport = int(fp.rest_url.split(":")[2].split("/")[0])
    nport = int(fp.gymnasium_url.split(":")[2].split("/")[0])
    result = {"connections": args.connections, "steps": args.steps, "cycles": args.cycles,
              "load_before": os.getloadavg()[0], "phases": {}}
    try:
        loadgen("gymie", "127.0.0.1", gport, "/gym", 200)  # warm-up
        phases = {"unloaded": [], "loaded": []}
        base = {"fds": fd_count(fp.pid), "rss_mb": rss_mb(fp.pid), "threads": threads(fp.pid)}
        # alternate: the machine's load drifts, so each cycle measures both, back to back
        for cycle in range(args.cycles):
            phases["unloaded"].append(measure(gport, rport, args.steps))
            t0 = time.monotonic()
            socks = hold(args.connections, [gport, rport, nport])
            deadline = time.monotonic() + 60
            while fd_count(fp.pid) < base["fds"] + args.connections and time.monotonic() < deadline:
                time.sleep(0.1)
            loaded = {"fds": fd_count(fp.pid), "rss_mb": rss_mb(fp.pid), "threads": threads(fp.pid),
                      "open_seconds": time.monotonic() - t0}
            phases["loaded"].append(measure(gport, rport, args.steps))
            alive = fd_count(fp.pid) - base["fds"]
            log(f"cycle {cycle}: holding {len(socks)} idle connections ({alive} still open after the loaded run): "
                f"farm fds {base['fds']} -> {loaded['fds']}, RSS {base['rss_mb']:.0f} -> {loaded['rss_mb']:.0f} MB, "
                f"threads {base['threads']} -> {loaded['threads']}; "
                f"p50 gymie {phases['unloaded'][-1]['gymie_p50_us']:.0f} -> "
                f"{phases['loaded'][-1]['gymie_p50_us']:.0f} us, rest {phases['unloaded'][-1]['rest_p50_us']:.0f} -> "
                f"{phases['loaded'][-1]['rest_p50_us']:.0f} us")
            for s in socks:
                s.close()
            deadline = time.monotonic() + 30
            while fd_count(fp.pid) > base["fds"] + 16 and time.monotonic() < deadline:
                time.sleep(0.1)
        phases["unloaded"].append(measure(gport, rport, args.steps))
    finally:
        fp.stop()
    result["farm"] = {"unloaded": base, "loaded": loaded}
    result["still_open_after_loaded_run"] = alive
    for key in ("gymie_p50_us", "rest_p50_us"):
        unloaded = statistics.median([m[key] for m in phases["unloaded"]])
        load = statistics.median([m[key] for m in phases["loaded"]])
        result["phases"][key] = {"unloaded": unloaded, "loaded": load, "ratio": load / unloaded}
        log(f"{key}: unloaded {unloaded:.0f} us, with {args.connections} idle connections {load:.0f} us, "
            f"ratio {load / unloaded:.2f} (target <= 1.5)")
    result["runs"] = phases
    result["load_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    (args.out / f"{stamp}-conn-flood.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# P12: {args.connections} idle connections ({stamp})", "",
          f"farm: fds {base['fds']} -> {loaded['fds']}, RSS {base['rss_mb']:.0f} -> {loaded['rss_mb']:.0f} MB, "
          f"threads {base['threads']} -> {loaded['threads']}; "
          f"load {result['load_before']:.2f} -> {result['load_after']:.2f}", "",
          "| client | unloaded p50 | loaded p50 | ratio (target <= 1.5) |", "|---|---|---|---|"]
    for key, name in (("gymie_p50_us", "Gymie WebSocket step"), ("rest_p50_us", "REST keep-alive step")):
        p = result["phases"][key]
        md.append(f"| {name} | {p['unloaded']:.0f} us | {p['loaded']:.0f} us | {p['ratio']:.2f} |")
    (args.out / f"{stamp}-conn-flood.md").write_text("\n".join(md) + "\n")
    log(f"wrote {args.out / (stamp + '-conn-flood.json')}")


if __name__ == "__main__":
    main()
