"""Where sampling runs when the service is on Ray: Sampler replicas built from the same settings as the local
engine, reached through `RemoteEngine` (the same `generate` contract). Needs the `ray` extra."""

from __future__ import annotations

import functools
import threading
from typing import Any

from loracle.agent.settings import Settings

_REMOTE: dict[str, Any] = {}
_REMOTE_LOCK = threading.Lock()


def build_engine(settings: Settings):
    """Runs on each Sampler replica: the engine `loracle` would use in process with these settings."""
    from loracle.agent.runtime import engine_for, resolve_base

    return engine_for(resolve_base(settings))


def sampler_application(settings: Settings, *, replicas: int, capacity: int = 8, num_cpus: float = 1,
                        num_gpus: float = 0):
    """The Sampler deployment for these settings, bound and ready to deploy (or to bind into an ingress)."""
    from loracle.generation.ray_serving import sampler_application as bind_sampler

    local = settings.model_copy(update={"sampler_app": None})
    return bind_sampler(functools.partial(build_engine, local), replicas=replicas, capacity=capacity,
                        num_cpus=num_cpus, num_gpus=num_gpus)


def remote_engine(app_name: str):
    """One RemoteEngine per Serve application per process (it asks the replicas for the model's facts once)."""
    from loracle.generation.ray_serving import RemoteEngine

    with _REMOTE_LOCK:
        if app_name not in _REMOTE:
            _REMOTE[app_name] = RemoteEngine.connect(app_name)
        return _REMOTE[app_name]


def connect_ray(address: str) -> None:
    """Join the Ray cluster at `address` ('auto', 'ray://HOST:10001'), or start one on this machine ('local')."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)


def bulk_embedder(settings: Settings, ray_address: str | None):
    """The embedder for an import or refine: the local one, or Ray Data's over a cluster (same vectors)."""
    if ray_address is None:
        from loracle.tools.embedder import get_embedder

        return get_embedder(settings.embedding_model)
    from loracle.tools.embedder import MINILM
    from loracle.tools.ray_embed import RayDataEmbedder

    if settings.embedding_model != MINILM:
        raise ValueError(f"--ray embeds with {MINILM}; the configured embedding model is {settings.embedding_model!r}")
    connect_ray(ray_address)
    return RayDataEmbedder()
