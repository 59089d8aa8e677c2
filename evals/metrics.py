"""Ranking metrics over binary relevance labels."""

from __future__ import annotations

import math
from collections.abc import Sequence


def recall_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def precision_recall(picked: Sequence[int], relevant: set[int]) -> tuple[float, float]:
    hits = len(set(picked) & relevant)
    precision = hits / len(set(picked)) if picked else 0.0
    recall = hits / len(relevant) if relevant else 0.0
    return precision, recall


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]
