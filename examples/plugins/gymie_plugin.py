"""A worked example of `gymfarm start --import MODULE`: Gymie's @override hooks, the gymfarm way.

    PYTHONPATH=examples/plugins build/bin/gymfarm start --import gymie_plugin

Every worker imports this module before serving. Three things happen:
1. Env ids it registers become available to every client (here `plugin/Corridor-v0`).
2. `get_env(env_id, seed=None, **kw)` replaces `gymnasium.make`. Its signature decides which extra
   `make` parameters a Gymie client may send: here `max_episode_steps`; anything else is refused
   with Gymie's "Parameters `...` are wrong". (This is how Gym Retro or Unity envs were served:
   build them here.)
3. `process_step(step)` gets `(obs, reward, done, info)` and shapes the Gymie step reply; here it
   drops `info` and rounds rewards, as the Unity example of Gymie did.
"""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Walk right along a corridor of 5 cells; reaching the end pays 1."""

    observation_space = spaces.Discrete(5)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self.pos, {"note": "start"}

    def step(self, action):
        self.pos = max(0, min(4, self.pos + (1 if action == 1 else -1)))
        done = self.pos == 4
        return self.pos, float(done), done, False, {"note": "moved"}


gym.register(id="plugin/Corridor-v0", entry_point=Corridor)


def get_env(env_id, seed=None, max_episode_steps=None):
    """Builds every env the farm serves while this module is imported."""
    return gym.make(env_id, max_episode_steps=max_episode_steps)


def process_step(step):
    obs, reward, done, info = step
    obs = obs.tolist() if isinstance(obs, np.ndarray) else obs
    return [obs, round(float(reward), 3), bool(done), {}]
