r"""POST /v1/chat/completions: the agent runs on the conversation's last user message.

A thread is continued by (first match wins) the `X-Loracle-Thread` header, `metadata.thread_id`, or the
`thread: \`ID\`` line loracle puts at the end of every answer, so a stock chat front end that sends the
history back continues the thread without knowing about it. An `image_url` part in the last user message
(a data URL, or a link to one of the tenant's own images) makes the turn an edit of that image.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from loracle.agent.access import find_image, stored_png
from loracle.agent.chat_replies import text_reply
from loracle.api import dispatch, markdown, uploads
from loracle.api.deps import CallerDep, ServiceDep
from loracle.api.errors import ApiError, error_body
from loracle.api.schemas import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, ErrorResponse, Usage
from loracle.api.service import Principal, Service
from loracle.api.sse import KEEPALIVE, frame, sse_response
from loracle.api.uploads import EditInput

router = APIRouter(prefix="/v1", tags=["openai"])
AGENT_MODEL = "loracle"
THREAD_MARK = re.compile(r"thread: `([A-Za-z0-9_-]{1,64})`")
THREAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)}


def model_ids(service: Service) -> list[str]:
    return [AGENT_MODEL, service.settings.base_model]


def pick_thread(body: ChatCompletionRequest, header: str | None) -> str:
    chosen = header or (body.metadata or {}).get("thread_id")
    if chosen:
        if not THREAD_ID.match(chosen):
            raise ApiError(400, "the thread id must be 1-64 letters, digits, '_' or '-'", code="invalid_thread",
                           param="metadata.thread_id")
        return chosen
    for message in reversed(body.messages):
        if message.role == "assistant" and (found := THREAD_MARK.findall(message.text())):
            return found[-1]
    return "chat-" + uuid.uuid4().hex[:16]


def n_images(body: ChatCompletionRequest) -> int | None:
    raw = (body.metadata or {}).get("n_images")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw):  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        raise ApiError(400, "metadata.n_images must be a whole number", code="invalid_n", param="metadata.n_images")
    return int(raw)


def strength(body: ChatCompletionRequest) -> float | None:
    raw = (body.metadata or {}).get("strength")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, f"metadata.strength must be a number between 0 and 1, got {raw!r}", code="invalid_strength",
                       param="metadata.strength") from None


def image_bytes(service: Service, request: Request, caller: Principal, url: str, param: str) -> bytes:
    """A data URL's bytes, or the file of one of the caller's own images (never anything fetched from outside)."""
    if url[:5].lower() == "data:":
        return uploads.data_url_bytes(url, service.config, param)
    hosts = {urlsplit(dispatch.base_url(service, request)).netloc.lower(), request.base_url.netloc.lower()}
    image_id = uploads.own_image_id(url, hosts, param)
    image = find_image(service.agent, image_id)
    if image is None or image.tenant != caller.tenant:
        raise ApiError(400, f"{param}: no image {image_id!r} of yours; link only images this API key's tenant made",
                       code="image_not_found", param=param)
    return stored_png(service.agent, image.path)


def chat_edit(service: Service, request: Request, caller: Principal, body: ChatCompletionRequest) -> EditInput | None:
    """The last user message's image (an `image_url` content part) as this turn's edit input; None without one."""
    index, last = len(body.messages) - 1, body.messages[-1]
    content = last.content if isinstance(last.content, list) else []
    parts = [(j, p) for j, p in enumerate(content) if p.type == "image_url"]
    if not parts:
        return None
    if len(parts) > 1:
        raise ApiError(400, f"the last message has {len(parts)} images; loracle edits one image per turn",
                       code="too_many_images", param=f"messages[{index}].content")
    j, part = parts[0]
    param = f"messages[{index}].content[{j}].image_url.url"
    if part.image_url is None:
        raise ApiError(400, f"{param} is missing", code="invalid_image_url", param=param)
    data = image_bytes(service, request, caller, part.image_url.url, param)
    return uploads.prepare(data, None, strength(body), config=service.config, native=service.native_size(),
                           agent=service.agent, tenant=caller.tenant, image_param=param,
                           strength_param="metadata.strength")


def describe(event: dict[str, Any]) -> str | None:
    """A progress event as a line of chat text, Markdown-escaped (None: not worth a line)."""
    line = _describe(event)
    return None if line is None else markdown.escape(line)


def _describe(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "plan":
        return ("Refining the plan: " if event.get("follow_up") else "Planning: ") + "; ".join(event["tasks"])
    if kind == "picks":
        names = [n for ns in event["picks"].values() for n in ns]
        return "Picked: " + (", ".join(names) if names else "no adapters (base model alone)")
    if kind == "mixes":
        return f"Composing {event['distinct']} mix(es) for {event['images']} image(s)"
    if kind == "progress":
        step, steps = event["step"], event["steps"]
        return f"Sampling {step}/{steps}" if step in (1, steps) or step % max(1, steps // 4) == 0 else None
    if kind == "inspection":
        return "Inspection: " + "; ".join(event["findings"])
    if kind == "retry":
        return f"Retrying (attempt {event['attempt'] + 1})"
    return None


def answer_text(service: Service, request: Request, state: dict[str, Any], thread_id: str) -> str:
    links = [f"![image {i + 1}]({dispatch.image_url(service, request, image['id'])})" for i, image in enumerate(state["images"])]
    return "\n\n".join([markdown.escape(state["answer"]), "\n".join(links), f"thread: `{thread_id}`"])


def text_completion(body: ChatCompletionRequest, text: str, thread_id: str):
    """A plain text answer, streamed or not, as OpenAI sends it."""
    created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
    if not body.stream:
        words = len(body.messages[-1].text().split()), len(text.split())
        return ChatCompletion(id=completion_id, created=created, model=body.model, thread_id=thread_id,
                              choices=[ChatChoice(message=AssistantMessage(content=text))],
                              usage=Usage(prompt_tokens=words[0], completion_tokens=words[1], total_tokens=sum(words)))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return frame({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    async def frames() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        yield chunk({"content": text})
        yield chunk({}, finish="stop")
        yield frame("[DONE]")

    return sse_response(frames(), {})


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
             summary="Chat with the agent (stream: SSE chat.completion.chunk frames ending in [DONE])")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, service: ServiceDep, caller: CallerDep,
    x_loracle_thread: Annotated[str | None, Header(pattern=THREAD_ID.pattern, description="Continue this thread.")] = None,
):
    if body.model not in model_ids(service):
        raise ApiError(404, f"unknown model {body.model!r}; available: {', '.join(model_ids(service))}",
                       code="model_not_found", param="model")
    if len(body.messages) > service.config.max_messages:
        raise ApiError(400, f"at most {service.config.max_messages} messages", code="too_many_messages", param="messages")
    last = body.messages[-1]
    if last.role != "user":
        raise ApiError(400, "the last message must be the user's", code="invalid_messages", param="messages")
    thread_id = pick_thread(body, x_loracle_thread)
    dispatch.check_limits(service, last.text(), n_images(body), None)
    if not isinstance(last.content, list) or all(p.type != "image_url" for p in last.content):
        reply = await run_in_threadpool(text_reply, service.agent, last.text())
        if reply is not None:  # a background task or a question: text, no run
            return text_completion(body, reply, thread_id)
    dispatch.check_engine(service)
    edit = await run_in_threadpool(chat_edit, service, request, caller, body)
    handle = await dispatch.start(service, caller, thread_id, last.text(), n=n_images(body), seed=body.seed, edit=edit)
    created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
    headers = {"X-Loracle-Thread": thread_id, "X-Loracle-Run": handle.run_id}
    if not body.stream:
        state = await dispatch.wait(service, handle, request)
        content = answer_text(service, request, state, thread_id)
        completion = ChatCompletion(id=completion_id, created=created, model=body.model, thread_id=thread_id,
                                    choices=[ChatChoice(message=AssistantMessage(content=content))],
                                    usage=Usage(prompt_tokens=len(last.text().split()), completion_tokens=len(content.split()),
                                                total_tokens=len(last.text().split()) + len(content.split())))
        return JSONResponse(completion.model_dump(), headers=headers)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return frame({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                      "thread_id": thread_id, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    async def body_stream() -> AsyncIterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in handle.stream(service.config.heartbeat_s):
                if event is None:
                    yield KEEPALIVE
                elif (line := describe(event)) is not None:
                    yield chunk({"content": line + "\n"})
            try:
                state = handle.result.result()
            except BaseException as exc:  # noqa: BLE001 - OpenAI streams an error object, clients raise it
                error = dispatch.as_api_error(service, exc)
                yield frame(error_body(error.status, error.message, error.code))
                return
            yield chunk({"content": "\n" + answer_text(service, request, state, thread_id)})
            yield chunk({}, finish="stop")
            yield frame("[DONE]")
        finally:
            handle.cancel.set()  # a no-op after the end; cancels the run when the client left early

    return sse_response(body_stream(), headers)
