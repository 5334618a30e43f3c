"""An env the gym-server tests import into the farm's workers: it has no rgb_array render."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class NoFrames(gym.Env):
    metadata = {"render_modes": []}
    observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode=None):
        if render_mode is not None:
            raise ValueError(f"no render mode {render_mode!r}")

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


if "gym_server_test/NoFrames-v0" not in gym.registry:
    gym.register(id="gym_server_test/NoFrames-v0", entry_point=NoFrames)
