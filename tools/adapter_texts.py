"""Which texts of an adapter get embedded, and how: one entry per kind of vector kept in the database.

Retrieval fuses a ranked list per kind (see tools/retrieve.py). Short "head" texts (name, tags,
trigger words) carry most of the signal; the card text and real example prompts add what the name
does not say. Token caps keep the catalog import within its time budget on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Card = Mapping[str, Any]


def _join(values: Any) -> str:
    return ", ".join(v for v in values or [] if v)


def head_text(card: Card) -> list[str]:
    return [f"{card['name']}; {_join(card.get('tags'))}; {_join(card.get('trigger_words'))}"]


def full_text(card: Card) -> list[str]:
    # The raw card only, so "before refining" stays measurable; the refined text has its own kind.
    body = card.get("description") or ""
    return [f"{card['name']}; {_join(card.get('tags'))}; {_join(card.get('trigger_words'))}; {body[:1000]}"]


_REPEATS_HEAD = re.compile(r"\s*\b(?:Tags|Trigger words):[^.]*\.?", re.IGNORECASE)


def refined_text(card: Card) -> list[str]:
    """The refiner's description (tools/refine), only where one exists, led by the adapter's name.

    The offline refiner ends its text with the tags and trigger words, which the "head" vector already
    holds; they are left out here so the token budget goes to what the card and examples say.
    """
    body = _REPEATS_HEAD.sub("", card.get("refined_description") or "").strip()
    if not body:
        return []
    name = card["name"]
    return [body[:1000] if body.lower().startswith(name.lower()[:40]) else f"{name}: {body[:1000]}"]


def prompt_texts(card: Card) -> list[str]:
    return list(card.get("example_prompts") or [])[:MAX_PROMPTS]


MAX_PROMPTS = 1  # the first example prompt: more cost 3x the time for no measured gain


@dataclass(frozen=True)
class TextKind:
    name: str
    max_tokens: int
    build: Callable[[Card], list[str]]


TEXT_KINDS: tuple[TextKind, ...] = (
    TextKind("head", 32, head_text),
    TextKind("full", 128, full_text),
    TextKind("prompt", 64, prompt_texts),
    TextKind("refined", 64, refined_text),
)
KINDS_BY_NAME = {kind.name: kind for kind in TEXT_KINDS}
# The HNSW indexes kept (db/vectors.py): one per kind that retrieval searches alone, and one over the
# card text and the refined description together, searched for the better of the two (tools/retrieve.py).
INDEXED_KINDS: tuple[str, ...] = ("head", "full", "prompt", "full+refined")
