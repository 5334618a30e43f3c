"""Drives real Gymnasium envs through a running farm: several CartPoles stepped in parallel with
one batched message per step, then a single env stepped one request at a time.

    python examples/demo.py --endpoint tcp://127.0.0.1:5555 --envs 8 --seconds 3
"""
import argparse
import time

import numpy as np

import gymfarm


def policy(obs: np.ndarray) -> int:
    """A hand-written CartPole controller: push towards where the pole is falling."""
    _, _, angle, angular_velocity = obs
    return int(angle + 0.5 * angular_velocity > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--endpoint", default=gymfarm.DEFAULT_ENDPOINT)
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()

    farm = gymfarm.connect(args.endpoint)
    print(f"[demo] connected to {args.endpoint}: {farm.server['workers']} workers, "
          f"{len(farm.envs())} env ids registered")

    envs = [farm.make("CartPole-v1") for _ in range(args.envs)]
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    returns = [0.0] * len(envs)
    finished = []
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        results = farm.step_batch([(env.instance_id, policy(o)) for env, o in zip(envs, obs)])
        steps += len(envs)
        for i, r in enumerate(results):
            if isinstance(r, gymfarm.GymfarmError):
                raise r
            returns[i] += r["reward"]
            obs[i] = r["obs"]
            if r["terminated"] or r["truncated"]:
                finished.append(returns[i])
                print(f"[demo] env {i} ({envs[i].instance_id[:8]}) finished an episode: return {returns[i]:.0f}")
                returns[i] = 0.0
                obs[i] = envs[i].reset()[0]
    elapsed = time.perf_counter() - start
    print(f"[demo] {len(envs)} envs in parallel (batched step): {steps} steps in {elapsed:.2f} s = "
          f"{steps / elapsed:,.0f} env-steps/s; {len(finished)} episodes, mean return "
          f"{np.mean(finished) if finished else float('nan'):.1f}")
    for env in envs:
        env.close()

    env = farm.make("CartPole-v1")
    o, _ = env.reset(seed=42)
    n, total, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        o, r, term, trunc, _ = env.step(env.action_space.sample())
        total += r
        n += 1
        if term or trunc:
            o, _ = env.reset()
    elapsed = time.perf_counter() - start
    print(f"[demo] one env, one request per step: {n / elapsed:,.0f} steps/s "
          f"({1e6 * elapsed / n:.0f} us per step round trip)")
    env.close()

    pend = farm.make("Pendulum-v1")
    o, _ = pend.reset(seed=0)
    ret = 0.0
    for _ in range(200):
        o, r, term, trunc, _ = pend.step(pend.action_space.sample())
        ret += r
    print(f"[demo] Pendulum-v1, 200 random steps: return {ret:.1f}, obs dtype {o.dtype}, shape {o.shape}")
    pend.close()
    farm.close()
    print("[demo] done")


if __name__ == "__main__":
    main()
