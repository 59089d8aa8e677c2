"""The offline planner's relevance floors per engine family's catalog (calibrated by
`python -m loracle.evals.relevance_floor`; absent for a family, the planner's own `min_score` is the floor).

Scores alone do not separate style paraphrases from unrelated phrases of real prompts ("thin" scores below
"eye focus" for a blur style), so there are two floors: the family's floor for a candidate whose card holds
every word of the task (by its first four letters: "slanted" -> the tag "slant"), and a higher one for a
candidate that does not ("braided ponytail" is not Hairline Digits, whatever its score).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from loracle.generation.world.judge import DIGIT_WORDS

FLOOR_PATH = Path(__file__).resolve().parent / "artifacts" / "relevance_floor.json"
STEM = 4
_SUBJECT_WORDS = frozenset(DIGIT_WORDS)  # the digits world's subject, never a style's word
_CATEGORY_WORDS = frozenset({"style", "concept", "character", "pose", "clothing", "background"})  # every card has one


@lru_cache(maxsize=8)
def _floors(family: str) -> tuple[float | None, float | None]:
    if not FLOOR_PATH.is_file():
        return None, None
    data = json.loads(FLOOR_PATH.read_text())
    values = data.get(family), data.get(f"{family}_uncovered")
    return tuple(float(v) if isinstance(v, (int, float)) else None for v in values)  # type: ignore[return-value]


def relevance_floor(family: str) -> float | None:
    """The score a candidate whose card covers the task needs to serve it."""
    return _floors(family)[0]


def uncovered_floor(family: str) -> float | None:
    """The score a candidate whose card does not cover the task needs (None: the same as `relevance_floor`)."""
    return _floors(family)[1]


def covers(task: str, card_text: str) -> bool:
    """Whether every word of the task (but short words and the subject's) starts a word of the card's text other
    than a category name ("stylized" is not covered by the tag "style"; "ff7r style" not by anything)."""
    card = [w for w in re.findall(r"[a-z0-9]+", card_text.lower()) if w not in _CATEGORY_WORDS]
    words = [w for w in re.findall(r"[a-z0-9]+", task.lower()) if len(w) > 2 and w not in _SUBJECT_WORDS]
    return all(any(c.startswith(w[:STEM]) for c in card) for w in words)
