"""How often people picked each adapter in the training queries: the learned reranker's pick prior.

Some adapters are picked again and again (a detail slider, a popular style); a person or Stylus's
composer who saw one fit often will likely pick it again. Per source of labels ("dev": Stylus's
composer, "civitai": prompt authors) the prior counts, for each adapter, the training queries that
picked it and those whose candidates held it, and gives two features:
`rate` = log1p(picks per 1000 queries) and `share` = picks / (appearances + alpha).

Adapters are keyed by "source:external_id", so the artifact works on any database holding the same
catalog. Training computes the features out-of-fold (a query's own labels never feed its prior);
serving uses the prior counted over all training queries, stored in the artifact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

SOURCES = ("dev", "civitai")
FEATURES: tuple[str, ...] = tuple(f"prior_{source}_{kind}" for source in SOURCES for kind in ("rate", "share"))
DEFAULT_ALPHA = 10.0


@dataclass
class SourceCounts:
    queries: int = 0
    picks: Counter = field(default_factory=Counter)
    appearances: Counter = field(default_factory=Counter)


@dataclass
class PickPrior:
    counts: dict[str, SourceCounts]
    alpha: float = DEFAULT_ALPHA

    @classmethod
    def count(cls, queries: Iterable[tuple[str, Sequence[str], Iterable[str]]], alpha: float = DEFAULT_ALPHA) -> PickPrior:
        """From (label source, candidate keys, picked keys) per training query."""
        counts = {source: SourceCounts() for source in SOURCES}
        for source, candidates, picked in queries:
            part = counts[source]
            part.queries += 1
            part.appearances.update(set(candidates))
            part.picks.update(set(picked))
        return cls(counts, alpha)

    def features(self, keys: Sequence[str]) -> np.ndarray:
        """A (len(keys), len(FEATURES)) float32 matrix, in FEATURES order."""
        columns = []
        for source in SOURCES:
            part = self.counts[source]
            picks = np.array([part.picks.get(k, 0) for k in keys], dtype=np.float64)
            seen = np.array([part.appearances.get(k, 0) for k in keys], dtype=np.float64)
            columns += [np.log1p(picks * 1000.0 / max(part.queries, 1)), picks / (seen + self.alpha)]
        return np.column_stack(columns).astype(np.float32) if keys else np.zeros((0, len(FEATURES)), np.float32)

    def to_json(self) -> dict[str, Any]:
        """Only adapters picked at least once: the others' features are 0 whatever their appearances."""
        return {"alpha": self.alpha, "sources": {
            source: {"queries": part.queries,
                     "adapters": {k: [n, part.appearances[k]] for k, n in sorted(part.picks.items())}}
            for source, part in self.counts.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PickPrior:
        counts = {}
        for source in SOURCES:
            part = data["sources"][source]
            adapters = part["adapters"]
            counts[source] = SourceCounts(int(part["queries"]), Counter({k: int(v[0]) for k, v in adapters.items()}),
                                          Counter({k: int(v[1]) for k, v in adapters.items()}))
        return cls(counts, float(data["alpha"]))
