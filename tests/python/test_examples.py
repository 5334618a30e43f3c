"""Short versions of the training examples: agents learn through the farm."""
import sys
from pathlib import Path

import numpy as np
from gymnasium.vector import AutoresetMode

import gymfarm

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import train_cartpole_cem  # noqa: E402
import train_frozenlake_q  # noqa: E402


def test_q_learning_solves_the_deterministic_lake(shared_farm):
    venv = gymfarm.make_vec("FrozenLake-v1", num_envs=8, endpoint=shared_farm.endpoint, is_slippery=False)
    try:
        q = train_frozenlake_q.train(venv, episodes=600, log=lambda *_: None)
        assert train_frozenlake_q.success_rate(venv, q, episodes=50) == 1.0
    finally:
        venv.close()


def test_cem_improves_cartpole(shared_farm):
    venv = gymfarm.make_vec("CartPole-v1", num_envs=8, endpoint=shared_farm.endpoint,
                            autoreset_mode=AutoresetMode.NEXT_STEP)
    means = []
    try:
        policy = train_cartpole_cem.train(venv, generations=8, population=32,
                                          log=lambda line: means.append(float(line.split()[5].rstrip(","))))
        scores = train_cartpole_cem.evaluate(venv, np.tile(policy, (8, 1)), np.random.default_rng(1))
    finally:
        venv.close()
    assert means[-1] > 2 * means[0], means
    assert scores.mean() > 250, scores  # a random policy scores about 22
