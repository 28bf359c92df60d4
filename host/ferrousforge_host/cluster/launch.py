"""Building the Serve application, and ``ferrousforge serve --ray``."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from ferrousforge.errors import ForgeError
from ferrousforge_host.cluster.config import ClusterConfig
from ferrousforge_host.cluster.ingress import Ingress
from ferrousforge_host.cluster.replica import ModelReplica
from ferrousforge_host.config import Settings, load_settings

APP_NAME = "ferrousforge"
# Serve's settings for this application, read by Ray's processes as they start (set them on a cluster
# of your own too: docs/cluster.md): the replicas run our code and Serve's router on their own event
# loop rather than a thread each, and handles reach replicas over gRPC. Each saves CPU per message.
SERVE_TUNING = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}


def build_app(settings: Settings, config: ClusterConfig) -> Application:
    """The ingress (one: it owns the store) bound to the model replicas."""
    replicas = serve.deployment(name="ModelReplica", **config.replica_options())(ModelReplica)
    ingress = serve.deployment(
        name="Ingress",
        num_replicas=1,
        ray_actor_options={
            "num_cpus": config.ingress_cpus,
            "resources": {config.store_resource: 0.01} if config.store_resource else {},
        },
        max_ongoing_requests=max(256, settings.max_queue),
        health_check_period_s=config.health_check_period_s,
        graceful_shutdown_timeout_s=config.graceful_shutdown_s,
    )(Ingress)
    return ingress.bind(replicas.bind(settings, config), settings, config)


def build(args: dict[str, Any]) -> Application:
    """``serve run ferrousforge_host.cluster:build num_replicas=2`` (or a config file's ``args:``)."""
    return build_app(load_settings(), ClusterConfig.load(args))


def start_local_ray(**options: Any) -> None:
    """``ray.init`` of a Ray started here, its processes tuned for Serve (what the environment says
    already stands)."""
    for key, value in SERVE_TUNING.items():
        os.environ.setdefault(key, value)
    ray.init(**options)


def _auth_hint() -> str:
    """Ray's clusters want a token unless started with RAY_AUTH_MODE=disabled; a driver sends it when told."""
    if os.environ.get("RAY_AUTH_MODE"):
        return ""
    return (
        " (a cluster with token authentication, Ray's default, needs RAY_AUTH_MODE=token here and its"
        " token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
    )


def serve_on_ray(settings: Settings, address: str | None) -> None:
    """Run the host as a Serve application on the Ray cluster at ``address``, or on a local Ray
    started here (and stopped on exit) when there is none; blocks until interrupted. On a
    cluster named by its address, only the application is removed at the end, not Serve."""
    stop = threading.Event()  # set by Ctrl-C or SIGTERM, also while starting up

    def stop_on_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    stop_on_signals()
    if address is None:  # a Ray of its own, even where another runs on this machine: it stops with us
        start_local_ray(address="local", include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise ForgeError(f"cannot reach the Ray cluster at {address}: {exc}{_auth_hint()}") from None
    stop_on_signals()  # again: Ray's own SIGTERM handler would end the process before the cleanup below
    try:
        host, port = settings.bind
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(settings, ClusterConfig.load()), name=APP_NAME, route_prefix="/")
        stop.wait()
    finally:
        serve.delete(APP_NAME)
        if address is None:
            serve.shutdown()
        ray.shutdown()
