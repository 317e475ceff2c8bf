"""``genrt serve DIR --ray``: the same FastAPI app as a Ray Serve ingress deployment, one pipeline and one
micro-batcher per replica, with fixed or autoscaled replicas.

On an existing cluster, skip the CLI and give Ray Serve the application builder::

    serve run genrt.serve.ray_app:app_builder directory=/models/sd15 replicas=2 gpus_per_replica=1

or a config file (``serve deploy config.yaml``; ``args`` are :func:`app_builder`'s keys, deployment options
override what the builder sets)::

    applications:
      - name: genrt
        route_prefix: /
        import_path: genrt.serve.ray_app:app_builder
        args: {directory: /models/sd15, max_batch: 8, backend: tensorrt}
        deployments:
          - name: GenrtIngress
            autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 4}
            ray_actor_options: {num_cpus: 1, num_gpus: 1}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genrt.errors import InputError, require
from genrt.serve.settings import ServeSettings


@dataclass(frozen=True)
class RayOptions:
    """How the deployment is placed and scaled."""

    replicas: int = 1  # replicas (the autoscaling minimum when max_replicas is set)
    max_replicas: int | None = None  # autoscale up to this many replicas; None: a fixed count
    target_ongoing_requests: float = 4.0  # autoscaling target of requests in flight per replica
    gpus_per_replica: float = 0.0  # GPUs each replica holds (its pipeline runs there)
    cpus_per_replica: float = 1.0  # CPUs each replica holds
    host: str = "127.0.0.1"  # address of Ray Serve's HTTP proxy
    port: int = 8000  # port of Ray Serve's HTTP proxy

    def __post_init__(self):
        if self.replicas < 1 or (self.max_replicas is not None and self.max_replicas < self.replicas):
            raise InputError(f"replicas {self.replicas}, max replicas {self.max_replicas}",
                             fix="pass --replicas >= 1 and --max-replicas >= --replicas")

    def deployment_options(self, settings: ServeSettings) -> dict[str, Any]:
        """Options of ``serve.deployment``: replicas or autoscaling, resources, in-flight and shutdown bounds."""
        scaling = ({"num_replicas": self.replicas} if self.max_replicas is None else
                   {"autoscaling_config": {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                           "target_ongoing_requests": self.target_ongoing_requests}})
        return {**scaling, "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
                # the replica's own queue answers 503 when full: let Ray pass that many requests on
                "max_ongoing_requests": settings.queue_size + settings.max_batch,
                "graceful_shutdown_timeout_s": settings.timeout_s}


def deployment(directory: str, settings: ServeSettings, options: RayOptions):
    """The bound Ray Serve application: ``GenrtIngress`` replicas serving ``create_app(directory, settings)``."""
    serve = require("ray.serve", "ray")

    @serve.deployment(name="GenrtIngress", **options.deployment_options(settings))
    @serve.ingress()
    class GenrtIngress:
        """One replica: the FastAPI app built on the replica (its lifespan loads the engines there)."""

        def __init__(self, directory: str, settings: ServeSettings):
            self._directory = directory
            self._settings = settings

        def __serve_build_asgi_app__(self):
            from genrt.serve.app import create_app

            return create_app(self._directory, self._settings, wait_loaded=True)

    return GenrtIngress.bind(directory, settings)


def app_builder(args: dict[str, str]):
    """Ray Serve application builder: ``directory`` plus any :class:`ServeSettings` / :class:`RayOptions` field."""
    values = dict(args)
    if "directory" not in values:
        raise InputError("the genrt application needs a directory", fix="pass directory=/path/to/export")
    directory = str(values.pop("directory"))
    settings = _fields(ServeSettings, values)
    options = _fields(RayOptions, values)
    if values:
        raise InputError(f"unknown argument(s) {', '.join(sorted(values))}",
                         fix="use directory and fields of ServeSettings / RayOptions")
    return deployment(directory, settings, options)


def _fields(cls, values: dict[str, Any]):
    """``cls`` from the entries of ``values`` that name its fields (taken out), converted from strings."""
    kinds = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}
    given = {}
    for field in dataclasses.fields(cls):
        if field.name in values:
            text = values.pop(field.name)
            given[field.name] = kinds[field.type](text) if isinstance(text, str) else text
    return cls(**given)


def init_ray() -> None:
    """Join the cluster at RAY_ADDRESS, or start a local Ray instance bound to loopback only."""
    import os

    ray = require("ray", "ray")
    address = os.environ.get("RAY_ADDRESS")
    local = {} if address else {"_node_ip_address": "127.0.0.1"}
    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, **local)


def serve_forever(directory: str, settings: ServeSettings, options: RayOptions) -> None:
    """Start (or join, with RAY_ADDRESS) a Ray cluster, deploy, and serve until interrupted."""
    ray = require("ray", "ray")
    serve = require("ray.serve", "ray")
    import os
    import signal

    def stop(signum, frame):
        raise _Stop()

    init_ray()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(signum, stop)
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(deployment(os.path.abspath(directory), settings, options), name="genrt", route_prefix="/")
        print(f"genrt serve: Ray Serve on http://{options.host}:{options.port} ({options.replicas} replica(s))",
              flush=True)
        signal.pause()
    except _Stop:
        pass
    finally:
        serve.shutdown()  # replicas finish in-flight requests (graceful_shutdown_timeout_s)
        ray.shutdown()


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: shut the deployment down."""
