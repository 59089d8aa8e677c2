"""POST /v1/images/generations (the agent on a fresh thread per request) and the image files themselves."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api import runs
from api.deps import CallerDep, OptionalCallerDep, ServiceDep
from api.errors import ApiError
from api.routes.chat import ERRORS, model_ids
from api.schemas import ImageData, ImageGenerationRequest, ImagesResponse
from api.service import Service
from db.tenancy import get_image

router = APIRouter(tags=["openai"])
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


async def check_size(service: Service, size: str | None) -> None:
    """Only the base model's native size is made: resizing would hide what the model can do."""
    if size in (None, "auto"):
        return
    native = await run_in_threadpool(service.native_size)
    if not SIZE.match(size):
        raise ApiError(400, f"size must look like WIDTHxHEIGHT or be 'auto', got {size!r}", code="invalid_size", param="size")
    if size != f"{native}x{native}":
        raise ApiError(400, f"size {size} is not supported by {service.settings.base_model}; use 'auto' or "
                            f"'{native}x{native}'", code="unsupported_size", param="size")


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=ERRORS, summary="Generate images for a prompt (OpenAI Images API)")
async def generations(body: ImageGenerationRequest, request: Request, service: ServiceDep, caller: CallerDep) -> ImagesResponse:
    if body.model is not None and body.model not in model_ids(service):
        raise ApiError(404, f"unknown model {body.model!r}; available: {', '.join(model_ids(service))}",
                       code="model_not_found", param="model")
    runs.check_limits(service, body.prompt, body.n, body.steps, param="prompt")
    await check_size(service, body.size)
    handle = await runs.start(service, caller, f"img-{uuid.uuid4().hex[:16]}", body.prompt, n=body.n or 1, seed=body.seed,
                                steps=body.steps)
    state = await runs.wait(service, handle, request)
    images = state["images"]
    if body.response_format == "b64_json":
        def read() -> list[str]:
            return [base64.b64encode((service.settings.images_dir / i["path"]).read_bytes()).decode() for i in images]

        encoded = await run_in_threadpool(read)
        data = [ImageData(b64_json=b, revised_prompt=i["prompt"]) for b, i in zip(encoded, images)]
    else:
        data = [ImageData(url=runs.image_url(service, request, i["id"]), revised_prompt=i["prompt"]) for i in images]
    return ImagesResponse(created=int(time.time()), data=data)


@router.get("/v1/images/files/{name}", response_class=FileResponse, tags=["images"],
            responses={200: {"content": {"image/png": {}}}, 404: ERRORS[404]},
            summary="An image file: for its tenant's key, or for anyone with the signed link")
def image_file(
    name: str, service: ServiceDep, caller: OptionalCallerDep,
    sig: Annotated[str | None, Query(max_length=128, description="The signature from a generated link.")] = None,
) -> FileResponse:
    image_id = name.removesuffix(".png")
    with service.db.connection() as conn:
        row = get_image(conn, image_id)
    allowed = row is not None and (service.signer.verify(image_id, sig) or (caller is not None and caller.tenant == row["tenant"]))
    path = service.settings.images_dir / row["path"] if allowed else None
    if path is None or not path.is_file():
        raise ApiError(404, f"no image {image_id!r}", code="image_not_found")
    return FileResponse(path, media_type="image/png", headers={
        "Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{row["sha256"]}"',
        "X-Content-Type-Options": "nosniff"})
