"""The graph's state and its run-scoped context (the parts that do not belong in a checkpoint).

The state is a pydantic model: LangGraph builds it from the checkpointed values before every node, so nodes
read typed fields (a `Plan`, `Pick`s, `Finding`s) and return plain dict updates holding the same types.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from loracle.agent.options import SamplingOptions
from loracle.agent.plan import Candidate, Edits, Pick, Plan
from loracle.agent.settings import Settings
from loracle.db import Database
from loracle.generation.engine import ImageEngine
from loracle.tools.embedder import Embedder
from loracle.tools.image_store import ImageStore
from loracle.tools.inspection import Finding, Judge


class TurnInput(TypedDict, total=False):
    """What one turn asks for; the rest of the state is carried over from earlier turns."""

    message: str
    n_images: int
    requested_seed: int  # this turn's seed, asked for explicitly: used on a follow-up turn too
    run_id: str
    input_image: str  # path of a PNG to edit (image-to-image / inpainting); absent: text-to-image
    input_mask: str  # path of a PNG mask, white = repaint, black = keep; absent: edit the whole image
    strength: float  # how far to move from the input image, 0 (unchanged) .. 1 (text-to-image)
    edits: Edits  # adapter edits made by hand (pin, exclude, weights), merged into the plan's


class GeneratedImage(BaseModel):
    """One image of this turn, as stored (file under the images folder) and recorded (its `images` row)."""

    attempt: int
    path: str  # relative to the images folder
    sha256: str
    seed: int
    mix: dict[str, float]  # adapter file -> weight
    nfe: int
    parameters: str  # the A1111 `parameters` text in the PNG
    id: str  # the `images` row
    adapters: list[int]  # the mix's adapter ids
    prompt: str  # the prompt the image was sampled with (trigger words included)
    triggers: list[str] = Field(default_factory=list)  # the trigger words its mix appended
    adapter_guidance: float = 1.0  # the no-adapters guide's weight it was sampled with (1: off)


class Repair(BaseModel):
    """What this turn's retries changed to bring out a style the judge did not see or the subject it missed, on top
    of the picks."""

    boost: dict[str, float] = Field(default_factory=dict)  # str(adapter id) -> weight multiplier
    adapter_guidance: float = 1.0  # weight of the no-adapters guide (1: off)
    subject_suspects: list[int] = Field(default_factory=list)  # adapters of images whose subject was wrong
    method: str | None = None  # composition method instead of the configured one
    steps: list[str] = Field(default_factory=list)  # what was done, for the answer


class Attempt(BaseModel):
    """A failed attempt of this turn: what was sampled and why it was retried."""

    attempt: int
    mixes: list[dict[str, float]]
    findings: list[Finding]
    images: list[str]  # paths, relative to the images folder


class AgentState(BaseModel):
    # this turn (TurnInput)
    message: str = ""
    run_id: str = ""
    n_images: int | None = None
    requested_seed: int | None = None
    input_image: str | None = None
    input_mask: str | None = None
    strength: float | None = None
    edits: Edits | None = None
    # carried across turns (checkpointed)
    seed: int | None = None  # the seed the last turn sampled with
    history: list[str] = Field(default_factory=list)
    plan: Plan | None = None
    planner: str = "offline"
    candidates: dict[str, list[Candidate]] = Field(default_factory=dict)
    picks: dict[str, list[Pick]] = Field(default_factory=dict)
    llm_calls: int = 0
    # this turn's generation
    attempt: int = 0
    dropped: list[int] = Field(default_factory=list)
    downweighted: dict[str, float] = Field(default_factory=dict)  # str(adapter id) -> weight multiplier
    repair: Repair = Field(default_factory=Repair)
    mixes: list[dict[str, float]] = Field(default_factory=list)  # per image: adapter file -> weight
    mix_adapters: list[list[int]] = Field(default_factory=list)  # per image: adapter ids
    triggers: list[list[str]] = Field(default_factory=list)  # per image: trigger words appended to the prompt
    findings: list[Finding] = Field(default_factory=list)
    skipped: list[Finding] = Field(default_factory=list)  # adapters left out because their files cannot be used
    attempts: list[Attempt] = Field(default_factory=list)
    kept: list[GeneratedImage | None] = Field(default_factory=list)  # per slot: an earlier image that passed, or None
    images: list[GeneratedImage] = Field(default_factory=list)  # kept + this attempt's
    nfe: int = 0
    timings: dict[str, float] = Field(default_factory=dict)
    sampler_replica: str | None = None  # on Ray: the replica that drew this turn's latest images
    answer: str = ""


def state_models(model: type[BaseModel] = AgentState) -> set[type[BaseModel]]:
    """Every pydantic model the state's fields can hold: the checkpointer revives these and nothing else."""
    found: set[type[BaseModel]] = set()

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.add(annotation)
                for field_info in annotation.model_fields.values():
                    visit(field_info.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    for field_info in model.model_fields.values():
        visit(field_info.annotation)
    return found


@dataclass(frozen=True)
class SubjectDomain:
    """What a narrow base model can draw (the digits world: digits only), so answers can say when a prompt
    asks for something else. `covers(text)`: the text names something it draws (for the digits world, the same
    reading of a prompt as its judge's, so "1 girl" or "(masterpiece:1.2)" is not a digit asked for).
    `without_subject(text)`: the text less the words naming what the base draws ("thin five" -> "thin"), what
    an adapter must serve."""

    name: str
    covers: Callable[[str], bool]
    without_subject: Callable[[str], str] = lambda text: text


@dataclass
class AgentContext:
    """Run-scoped dependencies injected into every node (LangGraph's `Runtime.context`)."""

    db: Database
    embedder: Embedder
    engine_factory: Callable[[], ImageEngine]
    images: ImageStore  # where run images and uploads are kept: files under the images folder, or the database
    adapter_dirs: list[Path]
    settings: Settings
    llm: BaseChatModel | None = None
    judge: Judge | None = None
    family: str = "sd15"  # which catalog base models fit the engine (tools/compatibility.py)
    guidance_scale: float = 7.5  # the base model's default when settings give none
    base_models: list[str] | None = None  # retrieval filter: catalog base models the engine can use
    tenant: str = "local"
    owner: int | None = None  # the process's owner key (db/owners.py): its staged image files carry it
    cancel: threading.Event = field(default_factory=threading.Event)
    static_conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (ref, ref, reason)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    domain: SubjectDomain | None = None  # None: the base model draws anything
