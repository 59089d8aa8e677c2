"""The service on Ray Serve: the same FastAPI app as an ingress deployment with N replicas, sampling on Sampler
replicas routed by adapter affinity (`loracle serve --ray`, or `serve run --name loracle loracle.api.ray_app:app`).

Every ingress replica reads the same PostgreSQL (`LORACLE_DATABASE_URL`: catalog, threads, runs, keys, and
the images themselves: the application sets LORACLE_IMAGE_STORE=postgres). Needs the `ray` extra.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from loracle.agent.placement import sampler_application
from loracle.agent.settings import Settings, get_settings
from loracle.api.app import create_app
from loracle.api.config import ApiConfig

APP_NAME = "loracle"


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ApiIngress:
    """One replica of the HTTP API; `sampler` is bound so Serve deploys the Sampler with this application."""

    def __init__(self, settings: Settings, allow_local: bool, sampler: Any) -> None:
        self.settings = settings
        self.allow_local = allow_local

    def __serve_build_asgi_app__(self):
        return create_app(self.settings, ApiConfig(), allow_local=self.allow_local)


def build_application(settings: Settings, *, app_name: str = APP_NAME, api_replicas: int = 1, sampler_replicas: int = 2,
                      adapters_per_replica: int = 8, sampler_cpus: float = 1, sampler_gpus: float = 0,
                      allow_local: bool = False):
    """The API ingress bound to its Sampler deployment; deploy with `serve.run(app, name=app_name)`."""
    sampler = sampler_application(settings, replicas=sampler_replicas, capacity=adapters_per_replica,
                                  num_cpus=sampler_cpus, num_gpus=sampler_gpus)
    # images in the database: the replicas may run on machines that share no folder
    on_ray = settings.model_copy(update={"sampler_app": app_name, "image_store": "postgres"})
    return ApiIngress.options(num_replicas=api_replicas).bind(on_ray, allow_local, sampler)


def app(args: dict[str, str]):
    """`serve run --name loracle loracle.api.ray_app:app api_replicas=2 sampler_replicas=4` (settings from LORACLE_*)."""
    return build_application(get_settings(), api_replicas=int(args.get("api_replicas", 1)),
                             sampler_replicas=int(args.get("sampler_replicas", 2)),
                             adapters_per_replica=int(args.get("adapters_per_replica", 8)),
                             sampler_gpus=float(args.get("sampler_gpus", 0)))
