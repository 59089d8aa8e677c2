"""POST /v1/images/generations and /v1/images/edits (the agent on a fresh thread per request), and the image files."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from loracle.agent.access import find_image, stored_png
from loracle.agent.errors import NotFound
from loracle.agent.gallery import image_details
from loracle.agent.options import MAX_SEED, SamplingOptions
from loracle.api import dispatch, uploads
from loracle.api.deps import CallerDep, OptionalCallerDep, ServiceDep
from loracle.api.errors import ApiError
from loracle.api.routes.chat import ERRORS, model_ids
from loracle.api.schemas import ImageAdapterOut, ImageData, ImageDetailsOut, ImageGenerationRequest, ImagesResponse
from loracle.api.service import Service

router = APIRouter(tags=["openai"])
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


OPENAI_IMAGE_MODELS = re.compile(r"^(dall-e-[23]|gpt-image-[\w.-]+)$")


async def output_size(service: Service, size: str | None) -> tuple[int, int] | None:
    """The size the images get: None for 'auto' or the model's native size (drawn as is), else (width, height),
    drawn at the native size and resampled, so a client whose size setting cannot change still gets an answer."""
    if size in (None, "auto"):
        return None
    match = SIZE.match(size)
    if not match:
        raise ApiError(400, f"size must look like WIDTHxHEIGHT or be 'auto', got {size!r}", code="invalid_size", param="size")
    width, height = int(match[1]), int(match[2])
    if not (8 <= width and 8 <= height and width * height <= service.config.max_image_pixels):
        raise ApiError(400, f"size {size} must be at least 8x8 and at most {service.config.max_image_pixels} pixels",
                       code="invalid_size", param="size")
    native = await run_in_threadpool(service.native_size)
    return None if (width, height) == (native, native) else (width, height)


def check_model(service: Service, model: str | None) -> None:
    """loracle's own models, or an OpenAI image model name (Open WebUI sends `dall-e-2` and cannot be told
    otherwise): those are aliases of the agent."""
    if model is not None and model not in model_ids(service) and not OPENAI_IMAGE_MODELS.match(model):
        raise ApiError(404, f"unknown model {model!r}; available: {', '.join(model_ids(service))} (or an OpenAI image "
                            "model name, which means the agent)", code="model_not_found", param="model")


async def images_response(service: Service, request: Request, state: dict[str, Any],
                          response_format: str | None, size: tuple[int, int] | None) -> ImagesResponse:
    """The run's images as OpenAI returns them: signed links, or the PNG bytes in base64."""
    images = state["images"]
    if response_format == "b64_json":
        def read() -> list[str]:
            return [base64.b64encode(stored_png(service.agent, i["path"])).decode() for i in images]

        encoded = await run_in_threadpool(read)
        data = [ImageData(b64_json=b, revised_prompt=i["prompt"]) for b, i in zip(encoded, images)]
    else:
        data = [ImageData(url=dispatch.image_url(service, request, i["id"]), revised_prompt=i["prompt"]) for i in images]
    native = await run_in_threadpool(service.native_size)
    return ImagesResponse(created=int(time.time()), data=data, size=f"{size[0]}x{size[1]}" if size else f"{native}x{native}",
                          drawn_size=f"{native}x{native}" if size else None)


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=ERRORS, summary="Generate images for a prompt (OpenAI Images API)")
async def generations(body: ImageGenerationRequest, request: Request, service: ServiceDep, caller: CallerDep) -> ImagesResponse:
    check_model(service, body.model)
    dispatch.check_limits(service, body.prompt, body.n, body.steps, param="prompt")
    dispatch.check_engine(service)
    size = await output_size(service, body.size)
    handle = await dispatch.start(service, caller, f"img-{uuid.uuid4().hex[:16]}", body.prompt, n=body.n or 1, seed=body.seed,
                                  steps=body.steps, sampling=SamplingOptions(output_size=size))
    return await images_response(service, request, await dispatch.wait(service, handle, request), body.response_format, size)


@router.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=ERRORS, summary="Edit an image: image-to-image, or inpainting inside a mask (OpenAI Images API)")
async def edits(
    request: Request, service: ServiceDep, caller: CallerDep,
    prompt: Annotated[str, Form(min_length=1, description="What the edited image should show.")],
    image: Annotated[UploadFile | None, File(description="The image to edit: a square PNG, JPEG or WebP file.")] = None,
    images: Annotated[list[UploadFile] | None, File(alias="image[]", description=(
        "The same as `image`, as the openai client sends a list; only one image is accepted."))] = None,
    mask: Annotated[UploadFile | None, File(description=(
        "Where to edit: fully transparent pixels (alpha 0), or white on black for a mask without alpha; "
        "the same size as the image. Unset: the whole image changes."))] = None,
    n: Annotated[int | None, Form(ge=1)] = 1,
    size: Annotated[str | None, Form(max_length=32, description="'auto' or WIDTHxHEIGHT (resampled from the native size).")] = None,
    response_format: Annotated[Literal["url", "b64_json"] | None, Form()] = "url",
    model: Annotated[str | None, Form(max_length=200)] = None,
    user: Annotated[str | None, Form(max_length=256)] = None,
    strength: Annotated[float | None, Form(description=(
        "loracle: how far to move from the image, 0 (unchanged) to 1 (made anew); default "
        "LORACLE_EDIT_STRENGTH (0.6), or LORACLE_INPAINT_STRENGTH (1.0) with a mask."))] = None,
    seed: Annotated[int | None, Form(ge=0, le=MAX_SEED)] = None,
    steps: Annotated[int | None, Form(ge=1, description="loracle: sampling steps (default from settings).")] = None,
) -> ImagesResponse:
    check_model(service, model)
    dispatch.check_limits(service, prompt, n, steps, param="prompt")
    dispatch.check_engine(service)
    out_size = await output_size(service, size)
    uploads.check_strength(strength)
    files = ([image] if image is not None else []) + list(images or [])
    if not files:
        raise ApiError(400, "image is required: send the image to edit as a multipart file field 'image'",
                       code="missing_image", param="image")
    if len(files) > 1:
        raise ApiError(400, f"got {len(files)} images; loracle edits one image per request", code="too_many_images",
                       param="image")
    limit = service.config.max_upload_bytes
    image_data = await files[0].read(limit + 1)
    mask_data = await mask.read(limit + 1) if mask is not None else None
    native = await run_in_threadpool(service.native_size)
    edit = await run_in_threadpool(lambda: uploads.prepare(
        image_data, mask_data, strength, config=service.config, native=native,
        agent=service.agent, tenant=caller.tenant))
    handle = await dispatch.start(service, caller, f"edit-{uuid.uuid4().hex[:16]}", prompt, n=n or 1, seed=seed,
                                  steps=steps, edit=edit, sampling=SamplingOptions(output_size=out_size))
    return await images_response(service, request, await dispatch.wait(service, handle, request), response_format, out_size)


@router.get("/v1/images/files/{name}", response_class=Response, tags=["images"],
            responses={200: {"content": {"image/png": {}}}, 400: ERRORS[400], 401: ERRORS[401], 403: ERRORS[401],
                       404: ERRORS[404]},
            # a key, or none at all: the signed link is the capability
            openapi_extra={"security": [{}, {"HTTPBearer": []}, {"APIKeyHeader": []}]},
            summary="An image file: for its tenant's key, or for anyone with an unexpired signed link")
def image_file(
    name: Annotated[str, Path(max_length=128)], service: ServiceDep, caller: OptionalCallerDep,
    exp: Annotated[int | None, Query(ge=0, le=2**62, description="When the signed link expires (Unix seconds).")] = None,
    sig: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$", description="The signature from a generated link.")] = None,
) -> Response:
    image_id = name.removesuffix(".png")
    image = find_image(service.agent, image_id)
    if image is None:
        raise ApiError(404, f"no image {image_id!r}", code="image_not_found")
    if caller is None or caller.tenant != image.tenant:
        link = service.signer.check(image_id, exp, sig)
        if link == "expired":
            raise ApiError(403, "this image link has expired; ask for the image again", code="link_expired")
        if link != "valid":
            raise ApiError(404, f"no image {image_id!r}", code="image_not_found")
    return Response(stored_png(service.agent, image.path), media_type="image/png", headers={
        "Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{image.sha256}"',
        "X-Content-Type-Options": "nosniff"})


@router.get("/images/{image_id}", response_model=ImageDetailsOut, tags=["images"], responses=ERRORS,
            summary="How one of your images was made: its parameters, seed, NFE and the adapters in its mix")
def read_image(image_id: str, request: Request, service: ServiceDep, caller: CallerDep) -> ImageDetailsOut:
    try:
        details = image_details(service.agent, caller.tenant, image_id)
    except NotFound:
        raise ApiError(404, f"no image {image_id!r}", code="image_not_found") from None
    fields = {k: v for k, v in vars(details).items() if k != "adapters"}
    return ImageDetailsOut(**fields, url=dispatch.image_url(service, request, details.id),
                           adapters=[ImageAdapterOut(**{**vars(a), "trigger_words": list(a.trigger_words)}) for a in details.adapters])
