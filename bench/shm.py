"""The shared-memory data plane against the socket path and the env in process.

    .venv/bin/python bench/shm.py [--pairs 5] [--steps 3000] [--out bench/results]

One farm; for each env, alternating pairs of: the env in process, a Python client whose instance
has a slab (``shm=True``), the same with the slab step in Python only (as without the compiled
gymfarm._slab_port, python/ext) and one that steps over the local socket (``shm=False``). Then a vector
env of 8 CartPole-v1 (one env per worker) through slabs, over the socket and AsyncVectorEnv(8).
Per-step p50/p99 of each, ratios within the run, the machine's load; the worker's own time per
request (the slab header's ``step_ns``) for the slab rows. Writes bench/results/shm-<date>.{json,md}.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "python")]
from farm_fixture import FarmProcess  # noqa: E402
from gymfarm import slab as gf_slab  # noqa: E402
from harness import real_env_lat  # noqa: E402

ENVS = {"CartPole-v1": 1.0, "HalfCheetah-v5": 0.5, "ALE/Pong-v5": 0.1}  # share of --steps per env


def log(msg):
    print(f"[shm] {msg}", flush=True)


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def lat(env, actions):
    return real_env_lat(env, actions, close=False)


def worker_ns(env):
    """The worker's own time per request (the slab's step_ns, a running average), or None without a slab."""
    s = getattr(env, "_slab", None)
    return int(s._q[144 // 8]) if s is not None and getattr(s, "_q", None) is not None else None


def make_pure(conn, env_id):
    """An env whose slab steps in Python only: made while the compiled step is hidden."""
    kept, gf_slab._slab_port = gf_slab._slab_port, None
    try:
        return conn.make(env_id)
    finally:
        gf_slab._slab_port = kept


def vec_rate(make, steps, n):
    v = make()
    try:
        v.reset(seed=0)
        acts = np.zeros(n, dtype=np.int64)
        for _ in range(20):
            v.step(acts)
        t = time.perf_counter()
        for _ in range(steps):
            v.step(acts)
        return n * steps / (time.perf_counter() - t)
    finally:
        v.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--envs", default=",".join(ENVS), help="comma-separated env ids")
    cfg = ap.parse_args()
    try:
        import ale_py
        gym.register_envs(ale_py)
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="gf-shm-"))
    fp = FarmProcess(tmp / "farm", workers=8)
    rows, loads = [], []
    try:
        slab_conn, sock_conn = fp.connect(shm=True), fp.connect(shm=False)
        for env_id in cfg.envs.split(","):
            n = max(100, int(cfg.steps * ENVS.get(env_id, 1.0)))
            space = gym.make(env_id).action_space
            space.seed(1)
            for k in range(cfg.pairs):
                acts = [space.sample() for _ in range(n + 20)]
                loads.append(os.getloadavg()[0])
                inproc = lat(gym.make(env_id), acts)
                e = slab_conn.make(env_id)
                slab = lat(e, acts)
                wns = worker_ns(e)
                e.close()
                e = make_pure(slab_conn, env_id)
                pure = lat(e, acts)
                e.close()
                e = sock_conn.make(env_id)
                sock = lat(e, acts)
                e.close()
                row = {"env": env_id, "pair": k, "load1": loads[-1], "steps": n,
                       "inprocess_p50_us": 1e6 * pct(inproc, 0.5), "inprocess_p99_us": 1e6 * pct(inproc, 0.99),
                       "shm_p50_us": 1e6 * pct(slab, 0.5), "shm_p99_us": 1e6 * pct(slab, 0.99),
                       "shm_python_p50_us": 1e6 * pct(pure, 0.5),
                       "socket_p50_us": 1e6 * pct(sock, 0.5), "socket_p99_us": 1e6 * pct(sock, 0.99),
                       "worker_us_per_request": wns / 1e3 if wns is not None else None}
                rows.append(row)
                log(f"{env_id} pair {k} (load {row['load1']:.2f}): in-process {row['inprocess_p50_us']:.1f} us, "
                    f"shm {row['shm_p50_us']:.1f} (worker {row['worker_us_per_request'] or 0:.1f}), "
                    f"shm in Python {row['shm_python_p50_us']:.1f}, "
                    f"socket {row['socket_p50_us']:.1f}")
        vec = []
        for k in range(cfg.pairs):
            steps = max(50, cfg.steps // 10)
            r = {"pair": k,
                 "shm": vec_rate(lambda: slab_conn.make_vec("CartPole-v1", 8), steps, 8),
                 "socket": vec_rate(lambda: sock_conn.make_vec("CartPole-v1", 8), steps, 8),
                 "async": vec_rate(lambda: gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 8),
                                   steps, 8)}
            vec.append(r)
            log(f"vector 8 pair {k}: shm {r['shm']:,.0f} env-steps/s, socket {r['socket']:,.0f}, "
                f"AsyncVectorEnv {r['async']:,.0f}")
        slab_conn.close()
        sock_conn.close()
    finally:
        fp.stop()
    write(cfg, rows, vec, loads)


def write(cfg, rows, vec, loads):
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    med = statistics.median
    lines = [f"Run {stamp} on {os.cpu_count()} cores, {cfg.pairs} pairs, load {min(loads):.1f}-{max(loads):.1f}.", "",
             "| env | in-process p50 | shm p50 (ratio) | shm p50, Python step (ratio) | socket p50 (ratio) | shm p99 "
             "| socket p99 | worker per request |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for env_id in dict.fromkeys(r["env"] for r in rows):
        rs = [r for r in rows if r["env"] == env_id]
        ip, sh, py, so = (med(r[k] for r in rs) for k in ("inprocess_p50_us", "shm_p50_us", "shm_python_p50_us",
                                                          "socket_p50_us"))
        ratios = [r["shm_p50_us"] / r["inprocess_p50_us"] for r in rs]
        py_ratio = med(r["shm_python_p50_us"] / r["inprocess_p50_us"] for r in rs)
        wk = [r["worker_us_per_request"] for r in rs if r["worker_us_per_request"] is not None]
        summary[env_id] = {"inprocess_p50_us": ip, "shm_p50_us": sh, "socket_p50_us": so,
                           "shm_ratio_median": med(ratios), "shm_ratio_min": min(ratios),
                           "shm_python_p50_us": py, "shm_python_ratio_median": py_ratio,
                           "socket_ratio_median": med(r["socket_p50_us"] / r["inprocess_p50_us"] for r in rs)}
        lines.append(f"| {env_id} | {ip:.1f} us | {sh:.1f} us ({med(ratios):.2f}x) | {py:.1f} us ({py_ratio:.2f}x) "
                     f"| {so:.1f} us "
                     f"({summary[env_id]['socket_ratio_median']:.2f}x) | {med(r['shm_p99_us'] for r in rs):,.0f} us | "
                     f"{med(r['socket_p99_us'] for r in rs):,.0f} us | {med(wk) if wk else 0:.1f} us |")
    if vec:
        s, so, a = (med(r[k] for r in vec) for k in ("shm", "socket", "async"))
        summary["vector8"] = {"shm": s, "socket": so, "async": a, "shm_ratio": s / a, "socket_ratio": so / a}
        lines += ["", f"Vector env of 8 CartPole-v1, one env per worker: shm {s:,.0f} env-steps/s ({s / a:.2f}x "
                      f"AsyncVectorEnv(8) at {a:,.0f}), socket {so:,.0f} ({so / a:.2f}x)."]
    (out / f"shm-{stamp}.json").write_text(json.dumps({"rows": rows, "vector": vec, "summary": summary}, indent=1))
    (out / f"shm-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
