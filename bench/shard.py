"""The sharded client, measured (docs/scaling.md "Measured"):

    .venv/bin/python bench/shard.py [--envs N] [--steps S] [--pairs P] [--zmq] [--fanout 1,2,4,8] [--out DIR]

1. Overhead: a sharded client over 2 farms of N/2 workers each against one farm of N workers,
   the same N envs (a vector env of CartPole-v1), in alternating pairs; vector steps per second
   of each and their ratio (target >= 0.9).
2. Fan-out: the cost of one vector step of N envs spread over K farms (K = 1, 2, 4, 8), each farm
   with N/K workers: p50 and p99 of the step, its cost per added farm, and the client's own CPU
   time per step (the fan-out's cost in the client, apart from the farms' share of the cores).

All farms run on this machine, each on its own loopback address (127.0.0.2, ...) with one token,
started and stopped by pid. ``--zmq`` keeps every connection on ZeroMQ over TCP (as across hosts)
instead of the farms' local sockets. Writes bench/results/shard-<date>.json.
"""
import argparse
import datetime
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "python")]
import gymfarm  # noqa: E402
from farm_fixture import FarmProcess  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class Farms:
    """K farms of W workers each, on 127.0.0.2 ... with one token."""

    def __init__(self, tmp: Path, k: int, workers: int, token_file: Path, extra: list[str] = ()):
        self.farms = []
        try:
            for i in range(k):
                self.farms.append(FarmProcess(tmp / f"k{k}-{i}", workers=workers,
                                              args=["--host", f"127.0.0.{2 + i}", "--token-file", str(token_file),
                                                    *extra]))
        except BaseException:
            self.stop()
            raise

    @property
    def endpoints(self):
        return [f.endpoint for f in self.farms]

    def stop(self):
        for f in self.farms:
            f.stop()


def run_steps(venv, n_envs: int, steps: int):
    """Vector steps of random actions: (steps per second, the per-step times, the client's CPU
    time per step)."""
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2, size=(steps, n_envs))
    venv.reset(seed=0)
    for t in range(20):  # warm-up
        venv.step(acts[t])
    times = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    for t in range(steps):
        s = time.perf_counter()
        venv.step(acts[t])
        times.append(time.perf_counter() - s)
    cpu = (time.process_time() - c0) / steps
    return steps / (time.perf_counter() - t0), times, cpu


def open_venv(endpoints, n_envs, token, local):
    if len(endpoints) == 1:
        return gymfarm.RemoteVectorEnv(endpoints[0], "CartPole-v1", num_envs=n_envs, token=token,
                                       farm_options={"local": local})
    farm = gymfarm.connect(endpoints, token=token, local=local)
    return farm.make_vec("CartPole-v1", num_envs=n_envs, owns_farm=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--fanout", default="1,2,4,8")
    ap.add_argument("--zmq", action="store_true", help="ZeroMQ over TCP, not the farms' local sockets")
    ap.add_argument("--farm-args", default="", help="more gymfarm start flags, e.g. '--spin-us 0'")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    local = not a.zmq
    tmp = Path(tempfile.mkdtemp(prefix="gf-shard-"))
    token = secrets.token_hex(16)
    tok = tmp / "token"
    fd = os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, token.encode())
    os.close(fd)
    extra = a.farm_args.split()
    out = {"farm_args": extra, "date": datetime.datetime.now(datetime.UTC).isoformat(), "envs": a.envs,
           "steps": a.steps, "pairs": a.pairs, "transport": "local socket" if local else "zeromq tcp",
           "cpus": os.cpu_count()}

    # 1. overhead: 2 farms of N/2 workers against 1 farm of N workers
    one = Farms(tmp, 1, a.envs, tok, extra)
    two = Farms(tmp, 2, a.envs // 2, tok, extra)
    single, sharded = [], []
    try:
        for p in range(0 if a.skip_overhead else a.pairs):
            for label, farms, into in (("1 farm", one, single), ("2 farms", two, sharded))[:: 1 if p % 2 == 0 else -1]:
                venv = open_venv(farms.endpoints, a.envs, token, local)
                try:
                    sps, _, _ = run_steps(venv, a.envs, a.steps)
                finally:
                    venv.close()
                into.append(sps)
                print(f"[shard] pair {p}: {label}: {sps:,.0f} vector steps/s ({sps * a.envs:,.0f} env-steps/s)",
                      flush=True)
    finally:
        one.stop()
        two.stop()
    ratio = float(np.median(sharded) / np.median(single)) if single else float("nan")
    out["overhead"] = {"single_vector_steps_per_s": single, "sharded_vector_steps_per_s": sharded,
                       "ratio_of_medians": ratio, "target": 0.9, "met": ratio >= 0.9}
    print(f"[shard] overhead: 2 farms / 1 farm = {ratio:.3f} (target >= 0.9)", flush=True)

    # 2. fan-out: N envs over K farms
    fan = []
    for k in [int(x) for x in a.fanout.split(",") if x]:
        farms = Farms(tmp, k, max(1, a.envs // k), tok, extra)
        try:
            venv = open_venv(farms.endpoints, a.envs, token, local)
            try:
                sps, times, cpu = run_steps(venv, a.envs, a.steps)
            finally:
                venv.close()
        finally:
            farms.stop()
        row = {"farms": k, "vector_steps_per_s": sps, "p50_us": 1e6 * pct(times, 50), "p99_us": 1e6 * pct(times, 99),
               "client_cpu_us_per_step": 1e6 * cpu}
        fan.append(row)
        print(f"[shard] {k} farm(s): p50 {row['p50_us']:.0f} us, p99 {row['p99_us']:.0f} us, "
              f"{sps:,.0f} vector steps/s, client CPU {row['client_cpu_us_per_step']:.0f} us/step", flush=True)
    base = fan[0]["p50_us"] if fan else 0.0
    for row in fan:
        row["p50_over_1_farm"] = row["p50_us"] / base if base else None
        row["extra_us_per_added_farm"] = (row["p50_us"] - base) / (row["farms"] - 1) if row["farms"] > 1 else 0.0
    out["fanout"] = fan
    Path(a.out).mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    path = Path(a.out) / f"shard-{stamp}{'-zmq' if a.zmq else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"[shard] wrote {path}")


if __name__ == "__main__":
    main()
