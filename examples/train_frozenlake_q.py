"""Tabular Q-learning on FrozenLake, every step played on a farm through a vector env.

    python examples/train_frozenlake_q.py --endpoint tcp://127.0.0.1:5555 --envs 16

On the slippery 4x4 lake (the default FrozenLake-v1) the greedy policy reaches the usual solved
success rate of 0.70 (the env's reward_threshold) after some thousands of episodes;
``--not-slippery`` learns the deterministic lake in a few hundred.
"""
import argparse
import time

import numpy as np

import gymfarm


def train(venv, episodes, alpha=0.1, gamma=0.99, seed=0, log=print):
    rng = np.random.default_rng(seed)
    n_states = venv.single_observation_space.n
    n_actions = venv.single_action_space.n
    q = np.zeros((n_states, n_actions))
    obs, _ = venv.reset(seed=seed)
    done_episodes, recent = 0, []
    prev_done = np.zeros(venv.num_envs, dtype=bool)
    while done_episodes < episodes:
        eps = max(0.05, 1.0 - done_episodes / (0.6 * episodes))
        greedy = np.array([rng.choice(np.flatnonzero(q[s] == q[s].max())) for s in obs])
        explore = rng.random(venv.num_envs) < eps
        actions = np.where(explore, rng.integers(0, n_actions, venv.num_envs), greedy)
        next_obs, rewards, term, trunc, _ = venv.step(actions)
        for i in range(venv.num_envs):
            if prev_done[i]:  # NEXT_STEP autoreset: this step was the reset, not a transition
                continue
            s, a, r, s2 = obs[i], actions[i], rewards[i], next_obs[i]
            target = r if term[i] else r + gamma * q[s2].max()
            q[s, a] += alpha * (target - q[s, a])
            if term[i] or trunc[i]:
                done_episodes += 1
                recent.append(r)
                if done_episodes % 1000 == 0:
                    log(f"[q] {done_episodes} episodes, success over the last 1000: {np.mean(recent[-1000:]):.2f}")
        prev_done = term | trunc
        obs = next_obs
    return q


def success_rate(venv, q, episodes, seed=123):
    obs, _ = venv.reset(seed=seed)
    successes, finished = 0, 0
    prev_done = np.zeros(venv.num_envs, dtype=bool)
    while finished < episodes:
        obs, rewards, term, trunc, _ = venv.step(q[obs].argmax(axis=1))
        ended = (term | trunc) & ~prev_done
        finished += int(ended.sum())
        successes += int((rewards[ended] > 0).sum())
        prev_done = term | trunc
    return successes / finished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=gymfarm.DEFAULT_ENDPOINT)
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=15000)
    ap.add_argument("--not-slippery", action="store_true")
    ap.add_argument("--eval-episodes", type=int, default=1000)
    args = ap.parse_args()
    venv = gymfarm.make_vec("FrozenLake-v1", num_envs=args.envs, endpoint=args.endpoint,
                            is_slippery=not args.not_slippery)
    try:
        start = time.perf_counter()
        q = train(venv, args.episodes)
        rate = success_rate(venv, q, args.eval_episodes)
        print(f"[q] greedy success rate over {args.eval_episodes} episodes: {rate:.2f} "
              f"({'solved' if rate >= 0.70 else 'not solved'}; threshold 0.70) in {time.perf_counter() - start:.1f} s")
    finally:
        venv.close()


if __name__ == "__main__":
    main()
