"""The host as a Ray Serve application: an ingress speaking the host's HTTP API over the cluster's one
store, and model replicas (today's scheduler and engines) that Serve routes to by model.

``serve run ferrousforge_host.cluster:app`` or ``ferrousforge serve --ray [ADDRESS]``.
"""

from ferrousforge_host.cluster.launch import build, build_app, serve_on_ray

app = build({})

__all__ = ["app", "build", "build_app", "serve_on_ray"]
