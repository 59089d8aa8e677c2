"""Request and response bodies of the AUTOMATIC1111 web API subset (`/sdapi/v1/...`), with A1111's field names
and defaults. Fields loracle has no use for are accepted (clients such as `webuiapi` send dozens) and, when
they would change the picture, reported under `info.loracle.ignored`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loracle.agent.options import MAX_SEED


class Txt2ImgRequest(BaseModel):
    """A1111's StableDiffusionProcessingTxt2Img body: the prompt goes through the agent, which picks adapters;
    `<lora:name:w>` tags in it are the client's own picks."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=20_000, pattern=r"\S",
                        description="What to draw (not blank); `<lora:name:w>` tags pin adapters.")
    negative_prompt: str = Field("", max_length=20_000)
    styles: list[str] = Field(default_factory=list, max_length=64, description="Ignored (A1111 prompt styles).")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1: a random seed. Image i gets seed + i.")
    sampler_name: str | None = Field(None, max_length=100, description="DDIM, DPM++ 2M, DPM++ 2M Karras, Euler, Euler a.")
    sampler_index: str | None = Field(None, max_length=100, description="The older name of sampler_name.")
    scheduler: str | None = Field(None, max_length=100, description="A1111's schedule type: Automatic or Karras.")
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=64, description="Batches; images = batch_size x n_iter (at most the server's n limit).")
    steps: int | None = Field(None, ge=1, le=1000, description="Unset: loracle's LORACLE_STEPS.")
    cfg_scale: float | None = Field(None, ge=0, le=30, description="Classifier-free guidance scale; unset: the model's default.")
    width: int | None = Field(None, ge=8, le=8192, description="Unset: the base model's native size. Another size is "
                              "drawn at the native size and resampled (info.loracle.drawn_size says so).")
    height: int | None = Field(None, ge=8, le=8192)
    restore_faces: bool | None = None
    tiling: bool | None = None
    enable_hr: bool | None = None
    subseed_strength: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict, description="Only sd_model_checkpoint is read.")
    script_name: str | None = None
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's StableDiffusionProcessingImg2Img body: one init image, an optional inpainting mask (white = repaint)."""

    init_images: list[str] = Field(..., min_length=1, max_length=1, description=(
        "One image, base64 or a data URL (PNG, JPEG or WebP); resized to the model's size."))
    denoising_strength: float = Field(0.75, ge=0, le=1, description="0: the image unchanged, 1: drawn anew.")
    mask: str | None = Field(None, description="Base64 or data URL, the size of the init image; white = repaint.")
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1: black = repaint.")
    include_init_images: bool = False


class ImagesOut(BaseModel):
    """A1111's TextToImageResponse / ImageToImageResponse."""

    images: list[str] = Field(description="PNG files in base64, each with its `parameters` text chunk.")
    parameters: dict[str, Any] = Field(description="The request as it was read.")
    info: str = Field(description="JSON: seed, all_seeds, infotexts, sd_model_name, ... and `loracle` (picks, run).")


class LoraItem(BaseModel):
    name: str = Field(description="What a `<lora:name:w>` tag says.")
    alias: str
    path: str = Field(description="Relative to its adapter folder.")
    metadata: dict[str, str] = Field(description="The file's safetensors header metadata.")
    loracle: dict[str, Any] | None = Field(None, description="Its catalog entry: ref, name, base model, tags, triggers.")


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str = Field(description="Relative to its checkpoint folder, or a built-in model's name.")
    config: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class ProgressOut(BaseModel):
    progress: float = Field(ge=0, le=1)
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = Field(None, description="The run's latest image in base64, once it has one.")
    textinfo: str | None = None


class ProgressIn(BaseModel):
    skip_current_image: bool = False


class PngInfoIn(BaseModel):
    image: str = Field(min_length=1, description="A PNG in base64 or as a data URL.")


class PngInfoOut(BaseModel):
    info: str = Field(description="The `parameters` text.")
    items: dict[str, str] = Field(description="The image's other text chunks.")
    parameters: dict[str, str] = Field(description="The parameters as fields: Prompt, Steps, Seed, Lora hashes, ...")
