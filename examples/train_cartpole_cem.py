"""Trains a linear CartPole policy with the cross-entropy method, every episode played on a farm.

    python examples/train_cartpole_cem.py --endpoint tcp://127.0.0.1:5555 --envs 16

No deep-learning framework: the policy is ``action = [obs @ w + b > 0]`` and CEM keeps the best
candidates of each generation. CartPole-v1 counts as solved at a mean return of 475 over 100
episodes; the script stops there and prints the evaluation.
"""
import argparse
import time

import numpy as np
from gymnasium.vector import AutoresetMode

import gymfarm


def evaluate(venv, candidates, rng):
    """Plays one episode per candidate, ``num_envs`` at a time; returns their returns."""
    n = venv.num_envs
    returns = np.zeros(len(candidates))
    queue = list(range(len(candidates)))
    assigned = [queue.pop(0) if queue else None for _ in range(n)]
    acc = np.zeros(n)
    obs, _ = venv.reset(seed=int(rng.integers(1 << 31)))
    while any(a is not None for a in assigned):
        actions = np.zeros(n, dtype=np.int64)
        for i, c in enumerate(assigned):
            if c is not None:
                w = candidates[c]
                actions[i] = int(obs[i] @ w[:4] + w[4] > 0)
        obs, rewards, term, trunc, _ = venv.step(actions)
        for i, c in enumerate(assigned):
            if c is None:
                continue
            acc[i] += rewards[i]
            if term[i] or trunc[i]:  # NEXT_STEP autoreset: the next step starts a new episode
                returns[c] = acc[i]
                acc[i] = 0.0
                assigned[i] = queue.pop(0) if queue else None
    return returns


def train(venv, generations, population, elite_frac=0.2, seed=0, log=print):
    rng = np.random.default_rng(seed)
    mu, sigma = np.zeros(5), np.ones(5)
    n_elite = max(2, int(population * elite_frac))
    best = None
    for g in range(generations):
        candidates = mu + sigma * rng.standard_normal((population, 5))
        returns = evaluate(venv, candidates, rng)
        elite = candidates[np.argsort(returns)[-n_elite:]]
        mu, sigma = elite.mean(axis=0), elite.std(axis=0) + 0.05
        best = mu
        log(f"[cem] generation {g}: mean return {returns.mean():6.1f}, best {returns.max():5.0f}")
        if returns.mean() >= 475:  # the whole population around mu solves it
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=gymfarm.DEFAULT_ENDPOINT)
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument("--eval-episodes", type=int, default=100)
    args = ap.parse_args()
    venv = gymfarm.make_vec("CartPole-v1", num_envs=args.envs, endpoint=args.endpoint,
                            autoreset_mode=AutoresetMode.NEXT_STEP)
    try:
        start = time.perf_counter()
        policy = train(venv, args.generations, args.population)
        scores = evaluate(venv, np.tile(policy, (args.eval_episodes, 1)), np.random.default_rng(1))
        elapsed = time.perf_counter() - start
        print(f"[cem] evaluation over {args.eval_episodes} episodes: mean return {scores.mean():.1f} "
              f"({'solved' if scores.mean() >= 475 else 'not solved'}; threshold 475) in {elapsed:.1f} s")
    finally:
        venv.close()


if __name__ == "__main__":
    main()
