"""Native threads and runs: create, read state and history, delete; a run streams the agent's events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from loracle.agent import access, gallery
from loracle.agent.errors import InvalidInput, NotFound
from loracle.agent.hand_edits import hand_edits
from loracle.agent.plan import Edits
from loracle.api import dispatch, uploads
from loracle.api.deps import CallerDep, ServiceDep
from loracle.api.errors import ApiError, error_body, hide_paths
from loracle.api.routes.chat import ERRORS, image_bytes
from loracle.api.schemas import (
    RunOut,
    RunRequest,
    RunResult,
    ThreadCreate,
    ThreadOut,
    ThreadPage,
    ThreadState,
    ThreadSummary,
)
from loracle.api.service import Principal, Service
from loracle.api.sse import KEEPALIVE, frame, sse_response
from loracle.api.uploads import EditInput

router = APIRouter(tags=["threads"])
STREAMED = {"plan", "candidates", "picks", "mixes", "progress", "images", "inspection", "retry"}
SSE_DOC = {200: {"content": {"text/event-stream": {}, "application/json": {"schema": {"$ref": "#/components/schemas/RunResult"}}},
                 "description": "SSE events (run, plan, candidates, picks, mixes, progress, images, inspection, retry, "
                                "done, error) or, with stream false, the result."}}


def _run_out(service: Service, request: Request, run: dict[str, Any]) -> RunOut:
    return RunOut(**{**run, "id": str(run["id"]), "error": hide_paths(run["error"]) if run.get("error") else None,
                     "plan": dispatch.public_plan(run.get("plan")),
                     "picks": dispatch.public_picks(run.get("picks")),
                     "images": [dispatch.image_out(service, request, i) for i in run["images"]]})


def run_edits(service: Service, body: RunRequest) -> Edits | None:
    """The request's adapter edits (pin, exclude, weights) resolved in the catalog; 400 naming an unknown ref."""
    try:
        return hand_edits(service.agent, pin=body.pin, exclude=body.exclude, weights=body.weights)
    except InvalidInput as exc:
        raise ApiError(400, str(exc), code="invalid_adapter", param=exc.field) from None


def run_image(service: Service, request: Request, caller: Principal, body: RunRequest) -> EditInput | None:
    """The image (and mask) the turn edits, checked and stored; None for a turn drawn from scratch."""
    if body.image is None:
        for name in ("mask", "strength"):
            if getattr(body, name) is not None:
                raise ApiError(400, f"{name} needs an image to edit", code="missing_image", param="image")
        return None
    data = image_bytes(service, request, caller, body.image, "image")
    mask = uploads.data_url_bytes(body.mask, service.config, "mask") if body.mask is not None else None
    return uploads.prepare(data, mask, body.strength, config=service.config, native=service.native_size(),
                           agent=service.agent, tenant=caller.tenant)


@contextmanager
def not_found_as(code: str) -> Iterator[None]:
    """The agent's NotFound as a 404 with this route's error code."""
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, str(exc), code=code) from None


@router.post("/threads", response_model=ThreadOut, status_code=201, responses={**ERRORS, 409: ERRORS[400]})
def create_thread(body: ThreadCreate, service: ServiceDep, caller: CallerDep) -> ThreadOut:
    thread_id = body.id or uuid.uuid4().hex[:16]
    if not access.claim_thread(service.agent, caller.tenant, thread_id):
        raise ApiError(409, f"thread {thread_id!r} already exists", code="thread_exists")
    return ThreadOut(**access.get_thread(service.agent, caller.tenant, thread_id))


@router.get("/threads", response_model=ThreadPage, responses=ERRORS, summary="Your threads, most recently active first")
def list_threads(
    request: Request, service: ServiceDep, caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> ThreadPage:
    rows = gallery.list_threads(service.agent, caller.tenant, limit=limit + 1, offset=offset)
    threads = [ThreadSummary(**{k: v for k, v in row.items() if k != "cover"},
                             cover_url=dispatch.image_url(service, request, str(row["cover"])) if row["cover"] else None)
               for row in rows[:limit]]
    return ThreadPage(threads=threads, next_offset=offset + limit if len(rows) > limit else None)


@router.get("/threads/{thread_id}", response_model=ThreadState, responses=ERRORS)
def read_thread(thread_id: str, request: Request, service: ServiceDep, caller: CallerDep) -> ThreadState:
    with not_found_as("thread_not_found"):
        thread = access.get_thread(service.agent, caller.tenant, thread_id)
    history = access.thread_runs(service.agent, caller.tenant, thread_id)
    state = service.agent.thread_state(caller.tenant, thread_id)
    return ThreadState(**thread, history=state.get("history") or [], plan=dispatch.public_plan(state.get("plan")),
                       planner=state.get("planner"), picks=dispatch.public_picks(state.get("picks")), seed=state.get("seed"),
                       runs=[_run_out(service, request, {**r, "thread_id": thread_id}) for r in history])


@router.delete("/threads/{thread_id}", status_code=204, responses=ERRORS)
def remove_thread(thread_id: str, service: ServiceDep, caller: CallerDep) -> Response:
    """Delete the conversation, its runs and its images (files no other run shares are removed too)."""
    with not_found_as("thread_not_found"):
        access.delete_thread(service.agent, caller.tenant, thread_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}", response_model=RunOut, responses=ERRORS)
def read_run(run_id: str, request: Request, service: ServiceDep, caller: CallerDep) -> RunOut:
    with not_found_as("run_not_found"):
        return _run_out(service, request, access.get_run(service.agent, caller.tenant, run_id))


@router.post("/threads/{thread_id}/runs", responses={**SSE_DOC, **ERRORS}, response_model=None,
             summary="Run one turn on the thread; streams SSE events unless stream is false")
async def create_run(thread_id: str, body: RunRequest, request: Request, service: ServiceDep, caller: CallerDep):
    with not_found_as("thread_not_found"):
        await run_in_threadpool(access.get_thread, service.agent, caller.tenant, thread_id)
    dispatch.check_limits(service, body.message, body.n, body.steps)
    dispatch.check_engine(service)
    edits = await run_in_threadpool(run_edits, service, body)
    edit = await run_in_threadpool(run_image, service, request, caller, body)
    handle = await dispatch.start(service, caller, thread_id, body.message, n=body.n, seed=body.seed, steps=body.steps,
                                  edit=edit, edits=edits)

    def result(state: dict[str, Any]) -> RunResult:
        return RunResult(run_id=state["run_id"], thread_id=thread_id, answer=state["answer"], planner=state.get("planner"),
                         plan=dispatch.public_plan(state.get("plan")), picks=dispatch.public_picks(state.get("picks")),
                         nfe=state.get("nfe", 0),
                         images=[dispatch.image_out(service, request, i) for i in state["images"]])

    headers = {"X-Loracle-Thread": thread_id, "X-Loracle-Run": handle.run_id}
    if not body.stream:
        return JSONResponse(result(await dispatch.wait(service, handle, request)).model_dump(mode="json"), headers=headers)

    async def events() -> AsyncIterator[str]:
        try:
            async for event in handle.stream(service.config.heartbeat_s):
                if event is None:
                    yield KEEPALIVE
                elif event.get("event") == "run" or event.get("event") in STREAMED:
                    yield frame(event, event["event"])
            try:
                state = handle.result.result()
            except BaseException as exc:  # noqa: BLE001 - the stream ends with an error event instead
                error = dispatch.as_api_error(service, exc)
                yield frame({**error_body(error.status, error.message, error.code), "status": error.status}, "error")
                return
            yield frame(result(state).model_dump(mode="json"), "done")
        finally:
            handle.cancel.set()

    return sse_response(events(), headers)
