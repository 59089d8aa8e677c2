"""`loracle serve`: the HTTP API under uvicorn (OpenAI-compatible under /v1, native routes, metrics)."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_agent


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to bind; anything but loopback requires API keys."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, metavar="PORT", help="Port to listen on."),
    log_level: str = typer.Option("info", "--log-level", metavar="LEVEL", help="uvicorn's log level (debug, info, warning, error)."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Serve on Ray Serve: 'local' starts a cluster here, else a cluster address ('auto', 'ray://HOST:10001')."),
    api_replicas: int = typer.Option(1, "--api-replicas", min=1, help="With --ray: replicas of the HTTP API."),
    sampler_replicas: int = typer.Option(2, "--sampler-replicas", min=1, help="With --ray: Sampler replicas (one per GPU or CPU slot)."),
    adapters_per_replica: int = typer.Option(8, "--adapters-per-replica", min=1, help="With --ray: adapters each Sampler keeps loaded."),
    sampler_gpus: float = typer.Option(0, "--sampler-gpus", min=0, help="With --ray: GPUs per Sampler replica."),
) -> None:
    """Serve the agent over HTTP until interrupted (on one process, or on a Ray cluster with --ray)."""
    import uvicorn

    from loracle.agent.access import any_active_key, any_key_created
    from loracle.api.app import LOCAL_MODE_BANNER, create_app
    from loracle.api.config import ApiConfig

    settings = get_settings()
    local = is_loopback(host)
    with open_agent(settings) as agent:
        keys, created = any_active_key(agent), any_key_created(agent)
    if not keys and not local:
        raise fail(f"refusing to serve on {host} without API keys: create one with "
                   "`loracle keys create --name NAME`, or bind to 127.0.0.1")
    if not created:
        typer.secho(f"WARNING: {LOCAL_MODE_BANNER}", fg=typer.colors.YELLOW, bold=True, err=True)
    elif not keys:
        typer.secho("WARNING: every API key is revoked, so every request will be refused; create one with "
                    "`loracle keys create --name NAME`", fg=typer.colors.YELLOW, bold=True, err=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if ray:
        from loracle.cli.serve_ray import serve_on_ray

        return serve_on_ray(settings, ray, host=host, port=port, allow_local=local, api_replicas=api_replicas,
                            sampler_replicas=sampler_replicas, adapters_per_replica=adapters_per_replica,
                            sampler_gpus=sampler_gpus)
    app = create_app(settings, ApiConfig(), allow_local=local)
    # uvicorn shuts down gracefully on SIGTERM (systemd, Docker, Kubernetes) and then raises the signal again with
    # the handler it found: the default one would end the process at once, skipping the exit handlers that stop
    # the embedded PostgreSQL. This one ends it as SIGINT does, through them.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
