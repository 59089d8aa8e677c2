"""The graph's state and its run-scoped context (the parts that do not belong in a checkpoint)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel

from loracle.db import Database
from loracle.generation.engine import Engine
from loracle.tools.embedder import Embedder
from loracle.tools.inspection import Judge


class TurnInput(TypedDict, total=False):
    """What one turn asks for; the rest of the state is carried over from earlier turns."""

    message: str
    n_images: int
    seed: int
    run_id: str
    input_image: str  # path of a PNG to edit (image-to-image / inpainting); absent: text-to-image
    input_mask: str  # path of a PNG mask, white = repaint, black = keep; absent: edit the whole image
    strength: float  # how far to move from the input image, 0 (unchanged) .. 1 (text-to-image)


class AgentState(TypedDict, total=False):
    # this turn
    message: str
    run_id: str
    n_images: int
    seed: int
    input_image: str
    input_mask: str
    strength: float
    # carried across turns (checkpointed)
    history: list[str]
    plan: dict[str, Any]
    planner: str
    candidates: dict[str, list[dict[str, Any]]]
    picks: dict[str, list[dict[str, Any]]]
    llm_calls: int
    # this turn's generation
    attempt: int
    dropped: list[int]
    downweighted: dict[str, float]
    mixes: list[dict[str, float]]
    mix_adapters: list[list[int]]
    triggers: list[list[str]]
    findings: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    images: list[dict[str, Any]]
    nfe: int
    timings: dict[str, float]
    answer: str


@dataclass
class AgentContext:
    """Run-scoped dependencies injected into every node (LangGraph's `Runtime.context`)."""

    db: Database
    embedder: Embedder
    engine_factory: Callable[[], Engine]
    images_dir: Any
    adapter_dirs: list[Any]
    settings: Any
    llm: BaseChatModel | None = None
    judge: Judge | None = None
    family: str = "sd15"  # which catalog base models fit the engine (tools/compatibility.py)
    guidance_scale: float = 7.5  # the base model's default when settings give none
    base_models: list[str] | None = None  # retrieval filter: catalog base models the engine can use
    tenant: str = "local"
    cancel: threading.Event = field(default_factory=threading.Event)
    static_conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (ref, ref, reason)
