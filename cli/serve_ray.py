"""`loracle serve --ray ADDRESS`: the API as a Ray Serve ingress, sampling on Sampler replicas routed by adapter
affinity. Every replica reads the database this command opened (or `LORACLE_DATABASE_URL`), images included."""

from __future__ import annotations

import time

import typer

from loracle.agent.settings import Settings
from loracle.cli.context import open_database


def serve_on_ray(settings: Settings, address: str, *, host: str, port: int, allow_local: bool, api_replicas: int,
                 sampler_replicas: int, adapters_per_replica: int, sampler_gpus: float) -> None:
    from ray import serve

    from loracle.agent.placement import connect_ray
    from loracle.api.ray_app import APP_NAME, build_application

    with open_database(settings) as db:  # held open while serving: an embedded server lives as long as this process
        shared = settings.model_copy(update={"database_url": db.url})
        connect_ray(address)
        serve.start(http_options={"host": host, "port": port})
        app = build_application(shared, api_replicas=api_replicas, sampler_replicas=sampler_replicas,
                                adapters_per_replica=adapters_per_replica, sampler_gpus=sampler_gpus,
                                allow_local=allow_local)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        typer.echo(f"serving on Ray at http://{host}:{port} ({api_replicas} API replica(s), {sampler_replicas} "
                   f"Sampler replica(s) keeping {adapters_per_replica} adapters each); Ctrl-C stops it", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            serve.delete(APP_NAME)
