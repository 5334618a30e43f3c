"""Gymnasium registration: ``gymnasium.make("gymfarm/CartPole-v1", endpoint=...)`` and
``gymnasium.make_vec("gymfarm/CartPole-v1", num_envs=8, endpoint=...)`` build farm envs, so code
that builds envs from id strings needs no change.

Every env id registered in this process when ``gymfarm`` is imported (without a namespace) gets a
``gymfarm/`` twin. :func:`register_remote` adds any other id the farm serves.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from .client import DEFAULT_ENDPOINT, Farm

NAMESPACE = "gymfarm"


def make_env(remote_id: str, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0, **kwargs: Any):
    """Entry point of ``gymfarm/<id>``: one env on its own connection, closed with the env.
    ``endpoint`` may name several farms (a list, a FarmCluster, a cluster file)."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        from .client import connect

        sharded = connect(endpoint, timeout=timeout)
        try:
            env = sharded.make(remote_id, **kwargs)
        except BaseException:
            sharded.close()
            raise
        sharded.keep_only(env.farm)
        env.owns_farm = True
        return env
    farm = Farm(endpoint, timeout=timeout)
    try:
        env = farm.make(remote_id, **kwargs)
    except BaseException:
        farm.close()
        raise
    env.owns_farm = True
    return env


def make_vec_env(remote_id: str, num_envs: int = 1, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 60.0,
                 **kwargs: Any):
    """Vector entry point of ``gymfarm/<id>`` (used by ``gymnasium.make_vec``)."""
    from .vector import RemoteVectorEnv

    if not isinstance(endpoint, str) or "://" not in endpoint:  # several farms: a ShardedVectorEnv
        from .client import connect

        sharded = connect(endpoint, timeout=timeout)
        try:
            return sharded.make_vec(remote_id, num_envs=num_envs, owns_farm=True, **kwargs)
        except BaseException:
            sharded.close()
            raise
    return RemoteVectorEnv(endpoint, remote_id, num_envs=num_envs, timeout=timeout, **kwargs)


def register_remote(remote_id: str, local_id: str | None = None) -> str:
    """Registers ``local_id`` (default ``gymfarm/<name>``) for the farm's ``remote_id``; returns it."""
    if local_id is None:
        local_id = f"{NAMESPACE}/{remote_id.split('/')[-1]}"
    if local_id not in gym.registry:
        gym.register(id=local_id, entry_point=make_env, vector_entry_point=make_vec_env,
                     kwargs={"remote_id": remote_id}, max_episode_steps=None, disable_env_checker=True)
    return local_id


def register_local_ids() -> None:
    for env_id in list(gym.registry.keys()):
        if "/" not in env_id:
            register_remote(env_id)
