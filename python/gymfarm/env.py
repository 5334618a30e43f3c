"""RemoteEnv: a real gymnasium.Env whose env lives in a gymfarm worker process."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.core import ActType, ObsType

from . import codec


class RemoteEnv(gym.Env):
    """A Gymnasium env served by a farm. Made with :meth:`gymfarm.Farm.make`.

    Spaces are rebuilt locally and equal the env's own; observations arrive as numpy arrays of
    the env's dtype and shape. Errors raise :mod:`gymfarm.errors` exceptions.
    """

    def __init__(self, farm: Any, env_id: str, **kwargs: Any):
        self.farm = farm
        self.env_id = env_id
        reply = farm.call("make", body={"env_id": env_id, "kwargs": kwargs})
        self.instance_id: str = reply["instance_id"]
        self.observation_space = codec.space_from_wire(reply["observation_space"])
        self.action_space = codec.space_from_wire(reply["action_space"])
        self.render_mode = reply.get("render_mode")
        self.metadata = dict(reply.get("metadata") or {})
        self.remote_spec: dict[str, Any] = dict(reply.get("spec") or {})
        self.owns_farm = False  # close the connection with the env (set by gymnasium.make entry points)
        self._closed = False

    def _call(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.farm.call(verb, self.instance_id, body)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = int(seed)
        if options is not None:
            body["options"] = options
        r = self._call("reset", body)
        return codec.value_to_space(self.observation_space, r["obs"]), r["info"]

    def step(self, action: ActType) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        r = self._call("step", {"action": codec.wire_action(self.action_space, action)})
        return (codec.value_to_space(self.observation_space, r["obs"]), r["reward"], r["terminated"],
                r["truncated"], r["info"])

    def render(self) -> Any:
        return self._call("render")["frame"]

    def sample(self, space: str = "action") -> Any:
        """Samples the remote env's own space (its RNG, not this process's)."""
        return self._call("sample", {"space": space})["value"]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call("close")
        except Exception:  # the instance may already be gone (crash, farm stopped)
            pass
        if self.owns_farm:
            self.farm.close()

    def __repr__(self) -> str:
        return f"<RemoteEnv {self.env_id} {self.instance_id} at {self.farm.endpoint}>"
