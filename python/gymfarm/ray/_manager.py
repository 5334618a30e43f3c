"""The detached actor behind ``gymfarm cluster up``: a FarmCluster that outlives the command."""
from __future__ import annotations

from typing import Any

NAMESPACE = "gymfarm"
MANAGER = "gymfarm-cluster"


class ClusterManager:
    """A FarmCluster that outlives the command that started it (a detached Ray actor)."""

    def __init__(self, kwargs: dict[str, Any], first_host: str | None):
        from . import FarmCluster

        if first_host:  # --first-host 127.0.0.2: node i gets 127.0.0.(2+i) (one-box test clusters)
            base, last = first_host.rsplit(".", 1)
            kwargs["host_for_node"] = lambda i, node: f"{base}.{int(last) + i}"
        self.cluster = FarmCluster(**kwargs)

    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def farms(self) -> list[dict[str, Any]]:
        return self.cluster.farms()

    def token(self) -> str:
        return self.cluster.token

    def curve(self) -> dict[str, str] | None:
        return self.cluster.client_curve

    def shutdown(self) -> None:
        self.cluster.shutdown()
