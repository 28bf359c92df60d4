"""How the cluster is shaped: replicas, their resources, and where each node keeps its store.

Values come from defaults < ``FERROUSFORGE_RAY_*`` environment < the arguments of ``serve run``
(``serve run ferrousforge_host.cluster:build num_replicas=2``) or a Serve config file's ``args:``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ferrousforge.errors import BadRequest


@dataclass(frozen=True)
class ClusterConfig:
    num_replicas: int = 1  # model replicas, when max_replicas is 0
    min_replicas: int = 1  # with max_replicas > 0: Serve autoscales between the two
    max_replicas: int = 0
    target_ongoing_requests: float = 2.0  # the load per replica autoscaling aims at
    max_ongoing_requests: int = 16  # requests one replica takes at once; past it Serve queues
    replica_cpus: float = 1.0  # Ray resources each model replica reserves
    replica_gpus: float = 0.0
    ingress_cpus: float = 0.5
    store_resource: str = ""  # a custom Ray resource only the node with the store has: the ingress goes there
    max_models_per_replica: int = 3  # multiplexed models a replica keeps (least recently used leave)
    # Each replica's store. "": the ingress's own folder (one machine or a shared file system: nothing
    # is copied). A node-local folder: replicas fetch blobs by digest from the ingress. "{replica}" in
    # it gives each replica a folder of its own (one machine pretending to be many nodes).
    node_models: str = ""
    # A replica's stream sends what the model made within this many ms as one message (the first
    # and last parts at once): each message between actors costs CPU the model could use
    stream_interval_ms: float = 40.0
    report_s: float = 1.0  # how often a replica tells the ingress what it holds
    health_check_period_s: float = 10.0
    graceful_shutdown_s: float = 20.0  # a draining replica finishes its requests for this long

    @classmethod
    def load(cls, args: dict[str, Any] | None = None) -> ClusterConfig:
        names = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name in names:
            env = os.environ.get(f"FERROUSFORGE_RAY_{name.upper()}")
            if env:
                values[name] = env
        unknown = set(args or {}) - set(names)
        if unknown:
            raise BadRequest(f"unknown cluster setting(s): {', '.join(sorted(unknown))}")
        values.update(args or {})
        config = cls()
        for name, value in values.items():
            kind = type(getattr(config, name))
            try:
                config = replace(config, **{name: kind(value)})
            except (TypeError, ValueError):
                raise BadRequest(f"invalid cluster setting {name}={value!r}") from None
        return config

    def replica_options(self) -> dict[str, Any]:
        """Serve deployment options for the model replicas."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": self.replica_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_s,
        }
        if self.max_replicas > 0:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.num_replicas
        return options
