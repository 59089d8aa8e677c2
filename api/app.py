"""The app factory: `create_app(settings)` wires the service in a lifespan, so tests and `loracle serve`
build the same app; nothing is opened at import time."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel
from starlette.concurrency import run_in_threadpool

from loracle.agent.settings import Settings
from loracle.api.config import ApiConfig
from loracle.api.errors import install_handlers
from loracle.api.metrics import Metrics
from loracle.api.middleware import BodyLimit, RecordMetrics
from loracle.api.page import install_page
from loracle.api.routes import adapters, chat, health, images, models, sdapi, threads
from loracle.api.service import Service
from loracle.api.webui_jobs import WebuiJobs

log = logging.getLogger("loracle.api")
LOCAL_MODE_BANNER = (
    "LOCAL SINGLE-USER MODE: no API key was ever created, so every request on this loopback address is served "
    "without authentication as tenant 'local' (admin), whatever key it sends. Create a key with "
    "`loracle keys create --name NAME` to require keys (for good: revoking it does not bring this mode back)."
)


def open_service(settings: Settings, config: ApiConfig, *, allow_local: bool, metrics: Metrics,
                 llm: BaseChatModel | None) -> Service:
    """Connect, migrate, import the bundled world's catalog if it is the base, build the run context, and settle
    what a crash or an outage left (runs marked interrupted, image files without rows removed)."""
    from loracle.agent.access import any_key_created
    from loracle.agent.service import Agent

    settings.images_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent.open(settings, max_size=config.workers * 2 + 8, llm=llm, threads_pool=config.workers + 2)
    try:
        agent.prepare()
        agent.recover()
        # Fail fast during an outage and recover fast after it: a request waits `db_wait_s` for a connection
        # (then 503), and the pools stop backing off after as long, so the first request once the database
        # is back opens a fresh connection instead of waiting out an exponential backoff.
        agent.set_database_wait(config.db_wait_s)
        if allow_local and not any_key_created(agent):
            log.warning(LOCAL_MODE_BANNER)
    except BaseException:
        agent.close()
        raise
    return Service(agent, config, allow_local=allow_local, metrics=metrics)


def create_app(settings: Settings, config: ApiConfig | None = None, *, allow_local: bool = False,
               llm: BaseChatModel | None = None) -> FastAPI:
    """The ASGI app. `allow_local`: serve key-less requests while no key exists (only for loopback binds).
    `llm`: a chat model instead of the one `settings.llm_model` names (a test's stub)."""
    config = config or ApiConfig()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = await run_in_threadpool(open_service, settings, config, allow_local=allow_local, metrics=metrics, llm=llm)
        app.state.service = service
        threading.Thread(target=service.warm_engine, name="loracle-warm", daemon=True).start()
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(title="loracle", version="0.1.0", lifespan=lifespan,
                  description="Chat prompts to images by choosing and mixing LoRA adapters; OpenAI-compatible under /v1.")
    install_handlers(app, on_database_error=lambda: app.state.service.repair_pools())
    app.state.webui_jobs = WebuiJobs()
    for module in (chat, images, models, threads, adapters, health, sdapi):
        app.include_router(module.router)
    install_page(app)
    # An image route's body may hold an image and a mask (base64 in chat adds a third); each is checked on its own.
    with_images = config.max_body_bytes + 3 * config.max_upload_bytes
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, per_path={
        "/v1/images/edits": with_images, "/v1/chat/completions": with_images, "/threads/[^/]+/runs": with_images,
        "/sdapi/v1/img2img": with_images, "/sdapi/v1/png-info": with_images})
    app.add_middleware(RecordMetrics, metrics=metrics)
    build_schema = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            state_limits(build_schema(), config)
        return app.openapi_schema

    app.openapi = openapi
    return app


def state_limits(schema: dict, config: ApiConfig) -> None:
    """Write this server's limits on `n` (A1111's `batch_size` and `n_iter` too) and `steps` (configured, checked in api/dispatch.py) into every request
    body of its OpenAPI schema, so a client, or a fuzzer, knows them before it is refused."""
    limits = {"n": config.max_n, "batch_size": config.max_n, "n_iter": config.max_n, "steps": config.max_steps}
    for component in schema.get("components", {}).get("schemas", {}).values():
        for name, prop in component.get("properties", {}).items():
            for branch in prop.get("anyOf", [prop]) if name in limits else []:
                if branch.get("type") == "integer":
                    branch["maximum"] = min(branch.get("maximum", limits[name]), limits[name])
            if "n_images" in prop.get("properties", {}) and config.max_n <= 9:  # chat's metadata.n_images, a string
                prop["properties"]["n_images"]["pattern"] = f"^[1-{config.max_n}]$"
