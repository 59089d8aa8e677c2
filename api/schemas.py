"""Request and response models of the HTTP API (storage rows stay in db/; these are the wire shapes).

OpenAI models accept and ignore fields loracle does not use (temperature, max_tokens, ...), so stock
clients work unchanged; loracle's additions (`thread_id`, `seed`, `steps`) are optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from loracle.agent.options import MAX_SEED

Seed = Field(default=None, ge=0, le=MAX_SEED)
AdapterRef = Annotated[str, StringConstraints(min_length=1, max_length=200)]
AdapterWeight = Annotated[float, Field(ge=-4, le=4)]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- OpenAI: chat -------------------------------------------------------------------------------

class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(description="A data URL (data:image/png;base64,...) or a link to one of your own loracle images.")
    detail: str | None = Field(default=None, max_length=16)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=64)
    text: str | None = None
    image_url: ImageUrl | None = Field(default=None, description="With type 'image_url': an image to edit.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [p.image_url.url for p in self.content if p.type == "image_url" and p.image_url is not None]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "loracle", "messages": [{"role": "user", "content": "a watercolor fox"}]},
        {"model": "loracle", "stream": True, "messages": [{"role": "user", "content": "a fox"}],
         "metadata": {"thread_id": "demo", "n_images": "1"}}]})
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is produced.")
    seed: int | None = Seed
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = Field(
        default=None, description="`thread_id` continues a thread; `n_images` sets how many images to make; "
                                  "`strength` (0-1) how far to move from an image in the last user message.",
        json_schema_extra={"properties": {
            "thread_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "n_images": {"type": "string", "pattern": "^[1-9][0-9]{0,5}$"},
            "strength": {"type": "string", "pattern": "^(0(\\.[0-9]{1,6})?|1(\\.0{1,6})?)$"}}})


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    thread_id: str = Field(description="Send it back (header X-Loracle-Thread or metadata.thread_id) to continue.")


# --- OpenAI: images and models -------------------------------------------------------------------

class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"prompt": "an oil painting of a fox", "n": 1, "response_format": "b64_json"}]})
    prompt: str = Field(min_length=1)
    model: str | None = Field(default=None, max_length=200)
    n: int | None = Field(default=1, ge=1)
    size: str | None = Field(default=None, max_length=32, pattern=r"^(auto|\d{1,5}x\d{1,5})$", description=(
        "'auto' (the base model's native size) or WIDTHxHEIGHT; another size than the native one is drawn at the "
        "native size and resampled, and `drawn_size` says so."))
    response_format: Literal["url", "b64_json"] | None = "url"
    user: str | None = Field(default=None, max_length=256)
    seed: int | None = Seed
    steps: int | None = Field(default=None, ge=1, description="loracle: sampling steps (default from settings).")


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    size: str | None = Field(default=None, description="The images' size, WIDTHxHEIGHT.")
    drawn_size: str | None = Field(default=None, description=(
        "loracle: the size the base model drew at, when the requested size is not its own (then resampled to `size`)."))


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loracle"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- native --------------------------------------------------------------------------------------

class ThreadCreate(BaseModel):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                           description="Letters, digits, '_' and '-', at most 64; unset = a new random id.")


class ImageOut(BaseModel):
    id: str
    url: str
    seed: int
    sha256: str
    attempt: int = 0
    mix: dict[str, float] = {}


class RunOut(BaseModel):
    id: str
    thread_id: str | None = None
    prompt: str
    status: str
    planner: str | None = None
    plan: dict[str, Any] | None = None
    picks: dict[str, Any] | None = None
    nfe: int | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    sampler_replica: str | None = Field(default=None, description="On Ray: the Sampler replica that drew the images.")
    sampler_retried: bool = Field(default=False, description="On Ray: a replica died mid-request and another one finished it.")
    images: list[ImageOut] = []


class ThreadOut(BaseModel):
    id: str
    created_at: datetime


class ThreadState(ThreadOut):
    history: list[str] = []
    plan: dict[str, Any] | None = None
    planner: str | None = None
    picks: dict[str, Any] | None = None
    seed: int | None = None
    runs: list[RunOut] = []


class RunRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"message": "a red fox", "n": 1, "stream": False}]})
    message: str = Field(min_length=1)
    n: int | None = Field(default=None, ge=1, description="Images to make (default from settings).")
    seed: int | None = Seed
    steps: int | None = Field(default=None, ge=1, description="Sampling steps (default from settings).")
    stream: bool = Field(default=True, description="Server-sent events as the run goes; false waits for the result.")
    pin: list[AdapterRef] = Field(default_factory=list, max_length=32,
                                  description="Adapter refs (source:id, as picks show them) to use from this turn on.")
    exclude: list[AdapterRef] = Field(default_factory=list, max_length=32,
                                      description="Adapter refs never to use again in this thread.")
    weights: dict[AdapterRef, AdapterWeight] = Field(default_factory=dict, max_length=32,
                                                     description="Adapter ref -> the weight to give it from this turn on.")
    image: str | None = Field(default=None, description=(
        "An image to edit: a data URL (data:image/png;base64,...) or a link to one of your own images."))
    mask: str | None = Field(default=None, description=(
        "Where to repaint, the image's size, as a data URL: white on black, or transparent = repaint. Unset: the whole image."))
    strength: float | None = Field(default=None, ge=0, le=1, description=(
        "How far to move from the image, 0 (unchanged) to 1 (drawn anew); default from settings."))


class RunResult(BaseModel):
    run_id: str
    thread_id: str
    answer: str
    planner: str | None = None
    plan: dict[str, Any] | None = None
    picks: dict[str, Any] | None = None
    nfe: int = 0
    images: list[ImageOut]


class ThreadSummary(ThreadOut):
    updated_at: datetime = Field(description="When its last turn started (its creation, before any).")
    title: str | None = Field(default=None, description="The first turn's prompt.")
    turns: int
    images: int
    cover_url: str | None = Field(default=None, description="A signed link to its newest image.")


class ThreadPage(BaseModel):
    threads: list[ThreadSummary]
    next_offset: int | None = Field(default=None, description="Pass as offset for the next page; null on the last one.")


class ImageAdapterOut(BaseModel):
    name: str
    weight: float = Field(description="The weight this image used it at.")
    ref: str | None = Field(default=None, description="Catalog reference (source:id), to pin or exclude it.")
    task: str | None = Field(default=None, description="The part of the prompt it served ('pinned' when pinned by hand).")
    reason: str | None = None
    trigger_words: list[str] = []
    page: str | None = Field(default=None, description="The adapter's public page, when its catalog has one.")


class ImageDetailsOut(BaseModel):
    id: str
    url: str = Field(description="A signed link to the PNG file itself (its A1111 parameters intact).")
    run_id: str
    thread_id: str
    prompt: str
    seed: int
    turn_seed: int = Field(description="Send as a run's seed to draw this image's batch again (same adapters, same masks).")
    nfe: int
    attempt: int
    sha256: str
    parameters: str = Field(description="The A1111 `parameters` text stored in the PNG.")
    created_at: datetime
    adapters: list[ImageAdapterOut]
    edit: dict[str, Any] | None = Field(default=None, description="mode, strength and source when the turn edited an image.")


class AdapterHit(BaseModel):
    id: int
    ref: str
    name: str
    score: float
    base_model: str | None = None
    tags: list[str] = []
    trigger_words: list[str] = []
    why: str


class CatalogImport(BaseModel):
    records: list[dict[str, Any]] = Field(min_length=1, description="Catalog records, as in a catalog .jsonl file.")


class RejectedOut(BaseModel):
    location: str
    reason: str


class ImportReportOut(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    rejected: list[RejectedOut]
    embedded: int
    seconds: float


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
