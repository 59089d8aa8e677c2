"""The offline planner's relevance floor per engine family's catalog: the reranked score a candidate needs
to serve a task at all (calibrated by `python -m loracle.evals.relevance_floor`; absent for a family, the
planner's own `min_score` is the floor)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

FLOOR_PATH = Path(__file__).resolve().parent / "artifacts" / "relevance_floor.json"


@lru_cache(maxsize=8)
def relevance_floor(family: str) -> float | None:
    if not FLOOR_PATH.is_file():
        return None
    value = json.loads(FLOOR_PATH.read_text()).get(family)
    return float(value) if isinstance(value, (int, float)) else None
