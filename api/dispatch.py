"""Starting a run for a request and turning its outcome into HTTP: limits, 429s, cancellation on
disconnect, and errors mapped to clear 4xx/503 answers. Shared by the chat, images and native routes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from loracle.agent.access import claim_thread
from loracle.agent.errors import AgentError, DatabaseUnavailable
from loracle.agent.options import SamplingOptions
from loracle.agent.plan import Edits
from loracle.api.errors import ApiError, from_agent
from loracle.api.queue import QueueFull
from loracle.api.schemas import ImageOut
from loracle.api.service import Principal, RunHandle, Service
from loracle.api.uploads import EditInput

log = logging.getLogger("loracle.api")


def check_limits(service: Service, message: str, n: int | None, steps: int | None, *, param: str = "message") -> None:
    config = service.config
    if not message.strip():
        raise ApiError(400, f"{param} is empty", code="empty_prompt", param=param)
    if "\x00" in message:
        raise ApiError(400, f"{param} contains a NUL character", code="invalid_characters", param=param)
    if len(message) > config.max_prompt_chars:
        raise ApiError(400, f"{param} is {len(message)} characters; the limit is {config.max_prompt_chars}",
                       code="prompt_too_long", param=param)
    if n is not None and not 1 <= n <= config.max_n:
        raise ApiError(400, f"n must be between 1 and {config.max_n}, got {n}", code="invalid_n", param="n")
    if steps is not None and not 1 <= steps <= config.max_steps:
        raise ApiError(400, f"steps must be between 1 and {config.max_steps}, got {steps}", code="invalid_steps",
                       param="steps")


def check_engine(service: Service) -> None:
    if service.engine_error:
        raise ApiError(503, f"the base model could not be loaded: {service.engine_error}", code="model_unavailable")


async def start(service: Service, caller: Principal, thread_id: str, message: str, *, n: int | None = None,
                seed: int | None = None, steps: int | None = None, edit: EditInput | None = None,
                sampling: SamplingOptions | None = None, edits: Edits | None = None) -> RunHandle:
    """Validate, make sure the thread is the caller's, and queue the run (429 when there is no room)."""
    check_limits(service, message, n, steps)
    check_engine(service)

    await run_in_threadpool(claim_thread, service.agent, caller.tenant, thread_id)
    try:
        return await service.start_run(caller, thread_id, message, n_images=n, seed=seed, steps=steps, edit=edit,
                                       sampling=sampling, edits=edits)
    except QueueFull as exc:
        service.metrics.rejected.inc()
        raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None


def as_api_error(service: Service, exc: BaseException) -> ApiError:
    """What a failed run means to the client."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AgentError):
        if isinstance(exc, DatabaseUnavailable):
            service.repair_pools()
        return from_agent(exc, invalid_code="invalid_request")
    log.error("run failed", exc_info=exc)
    return ApiError(500, f"the run failed ({type(exc).__name__}); see the server log", code="run_failed")


async def wait(service: Service, handle: RunHandle, request: Request, poll_s: float = 0.25) -> dict[str, Any]:
    """The run's final state; cancels it when the client goes away first."""
    while True:
        done, _ = await asyncio.wait({handle.result}, timeout=poll_s)
        if done:
            break
        if await request.is_disconnected():
            handle.cancel.set()
            raise ApiError(499, "the client disconnected; the run was cancelled", code="cancelled")
    try:
        return handle.result.result()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a clear answer
        raise as_api_error(service, exc) from None


def base_url(service: Service, request: Request) -> str:
    return (service.config.public_url or str(request.base_url)).rstrip("/")


def image_url(service: Service, request: Request, image_id: str) -> str:
    """A link anyone may fetch the image with until it expires (`LORACLE_API_LINK_TTL_S`)."""
    expires, signature = service.signer.link(str(image_id), service.config.link_ttl_s)
    return f"{base_url(service, request)}/v1/images/files/{image_id}.png?exp={expires}&sig={signature}"


def image_out(service: Service, request: Request, image: dict[str, Any]) -> ImageOut:
    mix = {Path(file).stem: weight for file, weight in (image.get("mix") or {}).items()}  # as <lora:NAME:W> names it
    return ImageOut(id=str(image["id"]), url=image_url(service, request, str(image["id"])), seed=image["seed"],
                    sha256=image["sha256"], attempt=image.get("attempt", 0), mix=mix)


def public_picks(picks: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any] | None:
    """Picks as a client sees them: an adapter's file by its name, never its path on the server."""
    if not picks:
        return picks
    return {task: [{**p, "file": Path(p["file"]).name if p.get("file") else None} for p in items] for task, items in picks.items()}


def public_plan(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """A plan as a client sees it: the input image and mask of an edit by their file names."""
    edit = (plan or {}).get("edit")
    if not edit:
        return plan
    names = {key: Path(edit[key]).name for key in ("image", "mask") if edit.get(key)}
    return {**plan, "edit": {**edit, **names}}
