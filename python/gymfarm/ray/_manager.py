"""The detached actor behind ``gymfarm cluster up``: a FarmCluster that outlives the command.

Ray restarts the manager when its process dies (``max_restarts=-1``) and runs its constructor
again with the same arguments, which hold the cluster's token and CURVE keys (they live in Ray's
own state, never in a file others may read). The farms' actors are detached and named per node
(``gymfarm-cluster-farm-NODE_ID``), so they outlive the manager and the restarted manager adopts
them (same farms, same pids) instead of starting second ones."""
from __future__ import annotations

from typing import Any

NAMESPACE = "gymfarm"
MANAGER = "gymfarm-cluster"
FARM_PREFIX = "gymfarm-cluster-farm-"


class ClusterManager:
    """A FarmCluster that outlives the command that started it (a detached Ray actor)."""

    def __init__(self, kwargs: dict[str, Any], first_host: str | None):
        from . import FarmCluster

        if first_host:  # --first-host 127.0.0.2: node i gets 127.0.0.(2+i) (one-box test clusters)
            base, last = first_host.rsplit(".", 1)
            kwargs["host_for_node"] = lambda i, node: f"{base}.{int(last) + i}"
        kwargs.update(detached=True, name_prefix=FARM_PREFIX, namespace=NAMESPACE)
        self.cluster = FarmCluster(**kwargs)

    def endpoints(self) -> list[str]:
        """The live farms' endpoints, at the time of asking (what a client from the file follows)."""
        return self.cluster.endpoints

    def restarted(self) -> bool:
        """Whether Ray restarted this manager (its farms then were adopted)."""
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def farms(self) -> list[dict[str, Any]]:
        return self.cluster.farms()

    def token(self) -> str:
        return self.cluster.token

    def curve(self) -> dict[str, str] | None:
        """The client's CURVE keys (``server_key``, ``public_key``, ``secret_key``)."""
        return self.cluster.client_curve

    def shutdown(self) -> None:
        self.cluster.shutdown()
