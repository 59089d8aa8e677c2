"""What a refine produces for one adapter, and the closed set of categories (Stylus's, plus object and tool)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Category = Literal[
    "concept", "style", "pose", "action", "character", "celebrity", "clothing",
    "background", "building", "vehicle", "animal", "object", "tool",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]
WeightSource = Literal["card", "examples", "llm", "default"]
Card = Mapping[str, Any]


@dataclass(frozen=True)
class Refinement:
    """The refined fields of one adapter row; `note` says why a fallback happened, if one did."""

    adapter_id: int
    description: str
    category: str
    weight: float
    weight_source: WeightSource
    trigger_words: list[str]
    refined_by: str
    input_hash: str
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
