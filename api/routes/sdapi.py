"""The AUTOMATIC1111 web API (`/sdapi/v1/...`), the subset its clients call (webuiapi, Open WebUI, editor plug-ins).

txt2img and img2img run the agent on a fresh thread per request, so the prompt gets adapters chosen for it;
`<lora:name:w>` tags are the client's own picks. Authentication is loracle's (bearer, X-API-Key) or HTTP Basic
as A1111's `--api-auth` does it (user = a key's name, password = the key); limits, queue and 429s are the
OpenAI routes'.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from loracle.agent import webui
from loracle.agent.access import stored_png
from loracle.agent.errors import InvalidInput, NotFound
from loracle.agent.options import SamplingOptions
from loracle.api import dispatch, uploads
from loracle.api.deps import CallerDep, ServiceDep
from loracle.api.errors import ApiError
from loracle.api.routes.chat import ERRORS
from loracle.api.sdapi_schemas import (
    ImagesOut,
    Img2ImgRequest,
    LoraItem,
    PngInfoIn,
    PngInfoOut,
    ProgressIn,
    ProgressOut,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    Txt2ImgRequest,
)
from loracle.api.service import Principal, Service
from loracle.api.uploads import EditInput
from loracle.api.webui_jobs import Job, WebuiJobs

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], responses=ERRORS)
VERSION = "loracle 0.1.0"


def get_jobs(request: Request) -> WebuiJobs:
    return request.app.state.webui_jobs


JobsDep = Annotated[WebuiJobs, Depends(get_jobs)]


def ignored_fields(body: Txt2ImgRequest, notes: list[str]) -> list[str]:
    """The request's fields that would change the picture in A1111 but have no effect here."""
    flags = {"restore_faces": body.restore_faces, "tiling": body.tiling, "enable_hr": body.enable_hr,
             "styles": bool(body.styles), "subseed_strength": bool(body.subseed_strength),
             "script_name": bool(body.script_name), "alwayson_scripts": bool(body.alwayson_scripts)}
    return notes + [name for name, value in flags.items() if value]


def image_bytes(value: str, param: str, service: Service) -> bytes:
    """An A1111 image field: base64, or a data URL; URLs are never fetched."""
    text = value.strip()
    if text[:5].lower() == "data:":
        return uploads.data_url_bytes(text, service.config, param)
    if text.startswith(("http://", "https://")):
        raise ApiError(400, f"{param}: loracle does not fetch URLs; send the image in base64", code="unsupported_image_url",
                       param=param)
    if len(text) * 3 // 4 > service.config.max_upload_bytes + 2:
        raise ApiError(400, f"{param} holds about {len(text) * 3 // 4} bytes; the limit is {service.config.max_upload_bytes}",
                       code="image_too_large", param=param)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param} is not valid base64", code="invalid_image", param=param) from None


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_input(service: Service, caller: Principal, body: Img2ImgRequest, native: int) -> EditInput:
    """The init image (and mask) checked, stretched to the model's square as A1111's "Just resize" does, stored."""
    image = uploads.decode(image_bytes(body.init_images[0], "init_images[0]", service), service.config, "init_images[0]")
    mask_data = None
    if body.mask:
        mask = uploads.decode(image_bytes(body.mask, "mask", service), service.config, "mask")
        if mask.size != image.size:
            raise ApiError(400, f"mask is {mask.width}x{mask.height} but init_images[0] is {image.width}x{image.height}; "
                                "they must be the same size", code="mask_size_mismatch", param="mask")
        mask = mask.convert("L")
        if body.inpainting_mask_invert:
            mask = mask.point(lambda v: 255 - v)
        mask_data = png(mask.resize((native, native), Image.Resampling.NEAREST))
    square = png(image.convert("RGB").resize((native, native), Image.Resampling.LANCZOS))
    return uploads.prepare(square, mask_data, body.denoising_strength, config=service.config, native=native,
                           agent=service.agent, tenant=caller.tenant, image_param="init_images[0]",
                           strength_param="denoising_strength")


async def check_model(service: Service, override: dict[str, Any]) -> None:
    """A1111 switches checkpoints per request; loracle switches with POST /sdapi/v1/options only."""
    wanted = override.get("sd_model_checkpoint")
    if not wanted:
        return
    try:
        found = await run_in_threadpool(webui.find_checkpoint, service.agent, str(wanted))
    except NotFound as exc:
        raise ApiError(404, str(exc), code="model_not_found", param="override_settings.sd_model_checkpoint") from None
    current = (await run_in_threadpool(webui.list_checkpoints, service.agent))[0]
    if found.spec != current.spec:
        raise ApiError(400, f"{wanted!r} is not the loaded model ({current.title}); switch first with POST "
                            "/sdapi/v1/options {\"sd_model_checkpoint\": ...}", code="model_not_loaded",
                       param="override_settings.sd_model_checkpoint")


def info_json(body: Txt2ImgRequest, state: dict[str, Any], size: tuple[int, int], ignored: list[str],
              strength: float | None) -> str:
    """The `info` string A1111 clients parse (processed.js()), with loracle's picks and run under `loracle`."""
    images = state["images"]
    fields = webui.parameter_fields(images[0]["parameters"]) if images else {}
    seeds = [i["seed"] for i in images]
    picks = {task: [{"name": p["name"], "ref": p["ref"], "weight": p.get("weight")} for p in ps]
             for task, ps in (state.get("picks") or {}).items()}
    info = {
        "prompt": body.prompt, "all_prompts": [i["prompt"] for i in images], "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [fields.get("Negative prompt", "")] * len(images),
        "seed": seeds[0] if seeds else state.get("seed"), "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(images),
        "subseed_strength": 0, "width": size[0], "height": size[1], "sampler_name": fields.get("Sampler"),
        "cfg_scale": float(fields["CFG scale"]) if fields.get("CFG scale") else None,
        "steps": int(fields["Steps"]) if fields.get("Steps", "").isdigit() else None, "batch_size": len(images),
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": fields.get("Model"),
        "sd_model_hash": fields.get("Model hash"), "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": strength,
        "extra_generation_params": {k: fields[k] for k in ("Lora hashes", "Resampled from") if k in fields},
        "index_of_first_image": 0, "infotexts": [i["parameters"] for i in images], "styles": body.styles,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "version": VERSION,
        "loracle": {"run_id": state.get("run_id"), "planner": state.get("planner"), "picks": picks,
                    "answer": state.get("answer", ""), "ignored": ignored, "drawn_size": fields.get("Resampled from"),
                    "interrupted": bool(state.get("interrupted"))},
    }
    return json.dumps(info)


async def generate(kind: str, body: Txt2ImgRequest, request: Request, service: Service, caller: Principal,
                   jobs: WebuiJobs) -> ImagesOut:
    """One txt2img or img2img request: validate, run the agent, answer with the images and A1111's info."""
    try:
        scheduler, notes = webui.scheduler_for(body.sampler_name or body.sampler_index, body.scheduler)
    except ValueError as exc:
        raise ApiError(404, str(exc), code="sampler_not_found", param="sampler_name") from None
    n = body.batch_size * body.n_iter
    dispatch.check_limits(service, body.prompt, n, body.steps, param="prompt")  # n = batch_size x n_iter
    dispatch.check_engine(service)
    await check_model(service, body.override_settings)
    native = await run_in_threadpool(service.native_size)
    size = (body.width or native, body.height or native)
    if size[0] * size[1] > service.config.max_image_pixels:
        raise ApiError(400, f"width x height = {size[0] * size[1]} pixels; the limit is {service.config.max_image_pixels}",
                       code="invalid_size", param="width")
    edit = None
    if isinstance(body, Img2ImgRequest):
        edit = await run_in_threadpool(edit_input, service, caller, body, native)
    sampling = SamplingOptions(steps=body.steps, scheduler=scheduler, guidance_scale=body.cfg_scale,
                               negative_prompt=body.negative_prompt, output_size=None if size == (native, native) else size)
    handle = await dispatch.start(service, caller, f"sd-{uuid.uuid4().hex[:16]}", body.prompt, n=n,
                                  seed=None if body.seed == -1 else body.seed, edit=edit, sampling=sampling)
    job, follower = jobs.start(caller.tenant, kind, handle)
    try:
        state = await dispatch.wait(service, handle, request)
    except ApiError as exc:
        if not (exc.code == "cancelled" and job.interrupted):
            raise
        state = {"images": [], "interrupted": True}  # A1111 answers an interrupted request with what it has: nothing
    finally:
        jobs.finish(caller.tenant, job)
        follower.cancel()
    encoded = await run_in_threadpool(read_images, service, state["images"]) if body.send_images else []
    exclude = set() if getattr(body, "include_init_images", True) else {"init_images", "mask"}
    return ImagesOut(images=encoded, parameters=body.model_dump(exclude=exclude),
                     info=info_json(body, state, size, ignored_fields(body, notes),
                                    body.denoising_strength if isinstance(body, Img2ImgRequest) else None))


def read_images(service: Service, images: list[dict[str, Any]]) -> list[str]:
    return [base64.b64encode(stored_png(service.agent, i["path"])).decode() for i in images]


@router.post("/txt2img", response_model=ImagesOut, summary="Text to image through the agent (A1111 API)")
async def txt2img(body: Txt2ImgRequest, request: Request, service: ServiceDep, caller: CallerDep, jobs: JobsDep) -> ImagesOut:
    return await generate("txt2img", body, request, service, caller, jobs)


@router.post("/img2img", response_model=ImagesOut, summary="Image to image or inpainting through the agent (A1111 API)")
async def img2img(body: Img2ImgRequest, request: Request, service: ServiceDep, caller: CallerDep, jobs: JobsDep) -> ImagesOut:
    return await generate("img2img", body, request, service, caller, jobs)


def progress_of(service: Service, job: Job | None, skip_current_image: bool) -> ProgressOut:
    if job is None:
        return ProgressOut(progress=0, eta_relative=0, state={"skipped": False, "interrupted": False, "job": "",
                                                              "job_count": 0, "job_timestamp": "0", "job_no": 0,
                                                              "sampling_step": 0, "sampling_steps": 0}, textinfo=None)
    elapsed = time.time() - job.started
    image = None
    if job.images and not skip_current_image:
        image = base64.b64encode(stored_png(service.agent, job.images[-1])).decode()
    state = {"skipped": False, "interrupted": job.interrupted, "job": job.kind, "job_count": 1,
             "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started)), "job_no": 0,
             "sampling_step": job.step, "sampling_steps": job.steps}
    return ProgressOut(progress=job.progress, eta_relative=max(0.0, elapsed / job.progress - elapsed), state=state,
                       current_image=image, textinfo=job.text)


@router.get("/progress", response_model=ProgressOut, summary="How far the caller's running request is")
def progress(service: ServiceDep, caller: CallerDep, jobs: JobsDep,
             skip_current_image: Annotated[bool, Query()] = False) -> ProgressOut:
    return progress_of(service, jobs.current(caller.tenant), skip_current_image)


@router.post("/progress", response_model=ProgressOut, summary="The same, with the options in a body")
def progress_post(service: ServiceDep, caller: CallerDep, jobs: JobsDep,
                  body: Annotated[ProgressIn | None, Body()] = None) -> ProgressOut:
    return progress_of(service, jobs.current(caller.tenant), bool(body and body.skip_current_image))


@router.post("/interrupt", response_model=dict[str, int], summary="Stop the caller's running requests")
def interrupt(caller: CallerDep, jobs: JobsDep) -> dict[str, int]:
    return {"interrupted": jobs.interrupt(caller.tenant)}


@router.get("/loras", response_model=list[LoraItem], summary="The LoRA files the engine can apply")
def loras(service: ServiceDep, caller: CallerDep) -> list[LoraItem]:
    def card(c: dict[str, Any] | None) -> dict[str, Any] | None:
        if c is None:
            return None
        return {"ref": f"{c['source']}:{c['external_id']}", "name": c["name"], "base_model": c["base_model"],
                "tags": c["tags"], "trigger_words": c["trigger_words"], "recommended_weight": c["recommended_weight"]}

    return [LoraItem(name=i.name, alias=i.alias, path=i.path, metadata=i.metadata, loracle=card(i.card))
            for i in webui.list_loras(service.agent)]


@router.post("/refresh-loras", response_model=None, summary="A no-op: the LoRA folders are read on every listing")
def refresh_loras(caller: CallerDep) -> None:
    return None


@router.get("/sd-models", response_model=list[SDModelItem], summary="The current base model and the checkpoints to switch to")
def sd_models(service: ServiceDep, caller: CallerDep) -> list[SDModelItem]:
    return [SDModelItem(title=c.title, model_name=c.model_name, hash=c.hash, sha256=c.sha256, filename=c.filename)
            for c in webui.list_checkpoints(service.agent)]


@router.post("/refresh-checkpoints", response_model=None, summary="A no-op: checkpoint folders are read on every listing")
def refresh_checkpoints(caller: CallerDep) -> None:
    return None


@router.get("/options", response_model=dict[str, Any], summary="The options A1111 clients read (sd_model_checkpoint)")
def get_options(service: ServiceDep, caller: CallerDep) -> dict[str, Any]:
    current = webui.list_checkpoints(service.agent)[0]
    return {"sd_model_checkpoint": current.title, "sd_checkpoint_hash": current.sha256, "samples_format": "png",
            "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "sd_lora": "None"}


@router.post("/options", response_model=None, summary="Switch the base model (admin keys); other options are ignored")
async def set_options(service: ServiceDep, caller: CallerDep,
                      body: Annotated[dict[str, Any], Body(description="Options by name; only sd_model_checkpoint is read.")]) -> None:
    wanted = body.get("sd_model_checkpoint")
    if wanted is None:
        return None
    if not isinstance(wanted, str) or not wanted.strip():
        raise ApiError(400, "sd_model_checkpoint must be a model title from /sdapi/v1/sd-models", code="invalid_value",
                       param="sd_model_checkpoint")
    try:
        found = await run_in_threadpool(webui.find_checkpoint, service.agent, wanted)
    except NotFound as exc:
        raise ApiError(404, str(exc), code="model_not_found", param="sd_model_checkpoint") from None
    if found.spec == service.settings.base_model:
        return None
    if not caller.admin:
        raise ApiError(403, "switching the base model changes it for everyone: it needs an admin key", code="admin_required",
                       param="sd_model_checkpoint")
    await run_in_threadpool(service.agent.switch_base_model, found.spec)
    return None


@router.get("/samplers", response_model=list[SamplerItem], summary="The samplers loracle has, by A1111's names")
def samplers(caller: CallerDep) -> list[SamplerItem]:
    return [SamplerItem(name=name, aliases=webui.SAMPLER_ALIASES[name], options={}) for name in webui.SAMPLERS]


@router.get("/schedulers", response_model=list[SchedulerItem], summary="The schedule types loracle reads")
def schedulers(caller: CallerDep) -> list[SchedulerItem]:
    return [SchedulerItem(name=name, label=label) for name, label in webui.SCHEDULE_TYPES.items()]


@router.post("/png-info", response_model=PngInfoOut, summary="The generation parameters inside a PNG")
def png_info(body: PngInfoIn, service: ServiceDep, caller: CallerDep) -> PngInfoOut:
    try:
        text, items, fields = webui.png_info(image_bytes(body.image, "image", service))
    except InvalidInput as exc:
        raise ApiError(400, str(exc), code="invalid_image", param="image") from None
    return PngInfoOut(info=text, items=items, parameters=fields)
