"""What people picked for the training queries: the learned reranker's pick prior.

Some adapters are picked again and again (a detail slider, a popular style), and prompts like one
another get like adapters. Per source of labels ("dev": Stylus's composer, "civitai": prompt authors)
the prior keeps, for each training query, its embedding and the adapters it picked, and gives:
- overall: `rate` = log1p(picks per 1000 queries) and `share` = picks / (appearances + alpha);
- near this query (the NEIGHBOURS training queries most like it): `votes`, the summed cosine of those
  that picked the adapter, and `nearest`, the best such cosine;
- `centroid`: the cosine of this query to the mean of the queries that picked the adapter.
`loracle rank train` reports what these features are worth (cross-validated and held-out R@10).

Adapters are keyed by "source:external_id", so the artifact works on any database holding the same
catalog. Query vectors are stored as int8 with one scale per vector, in training as in the artifact,
so what training scored is exactly what serving scores. Training computes the features out-of-fold (a
query's own labels never feed its prior); serving uses the prior over all training queries.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

SOURCES = ("dev", "civitai")
KINDS = ("rate", "share", "votes", "nearest", "centroid")
FEATURES: tuple[str, ...] = tuple(f"prior_{source}_{kind}" for source in SOURCES for kind in KINDS)
DEFAULT_ALPHA = 10.0
NEIGHBOURS = 20


def quantize(vector: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 codes and the scale that restores them (code * scale); cosines move by about 1e-3."""
    vector = np.asarray(vector, dtype=np.float32)
    scale = float(np.abs(vector).max()) / 127 or 1.0
    return np.round(vector / scale).astype(np.int8), scale


@dataclass
class SourceCounts:
    queries: int = 0
    picks: Counter = field(default_factory=Counter)
    appearances: Counter = field(default_factory=Counter)
    codes: list[np.ndarray] = field(default_factory=list)  # per picking query: its quantized vector ...
    scales: list[float] = field(default_factory=list)
    picked: list[tuple[str, ...]] = field(default_factory=list)  # ... and what it picked

    @cached_property
    def vectors(self) -> np.ndarray:
        """The picking queries' unit vectors, one row each (filled once counting is done)."""
        if not self.codes:
            return np.zeros((0, 0), np.float32)
        rows = np.stack(self.codes).astype(np.float32) * np.asarray(self.scales, np.float32)[:, None]
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    @cached_property
    def centroids(self) -> tuple[dict[str, int], np.ndarray]:
        """Per picked adapter, the unit mean of the vectors of the queries that picked it."""
        rows: dict[str, list[int]] = {}
        for i, keys in enumerate(self.picked):
            for key in keys:
                rows.setdefault(key, []).append(i)
        if not rows:
            return {}, np.zeros((0, 0), np.float32)
        means = np.stack([self.vectors[i].mean(axis=0) for i in rows.values()])
        return {key: j for j, key in enumerate(rows)}, means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def neighbours_json(self) -> dict[str, Any]:
        """The picking queries' int8 vectors (base64), their scales and what each picked."""
        codes = np.stack(self.codes) if self.codes else np.zeros((0, 0), np.int8)
        return {"dims": int(codes.shape[1]) if codes.size else 0, "scales": self.scales,
                "vectors": base64.b64encode(codes.tobytes()).decode("ascii"), "picked": [list(keys) for keys in self.picked]}

    @classmethod
    def from_neighbours_json(cls, near: dict[str, Any], **counts: Any) -> SourceCounts:
        codes = np.frombuffer(base64.b64decode(near["vectors"]), dtype=np.int8)
        picked = [tuple(keys) for keys in near["picked"]]
        if len(near["scales"]) != len(picked) or codes.size != len(picked) * int(near["dims"]):
            raise ValueError(f"{len(picked)} picking queries, {len(near['scales'])} scales, {codes.size} vector codes")
        return cls(codes=list(codes.reshape(len(picked), int(near["dims"]))) if picked else [],
                   scales=[float(s) for s in near["scales"]], picked=picked, **counts)

    def add(self, picked: tuple[str, ...], vector: np.ndarray) -> None:
        """One picking query: its int8 vector and what it picked."""
        code, scale = quantize(vector)
        self.codes.append(code)
        self.scales.append(scale)
        self.picked.append(picked)

    def votes(self, query: np.ndarray, neighbours: int = NEIGHBOURS) -> tuple[Counter, dict[str, float]]:
        """Among the `neighbours` picking queries most like `query`: per picked key, the summed cosine of
        those that picked it, and the best such cosine."""
        vote, best = Counter(), {}
        if not self.picked:
            return vote, best
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        similarity = self.vectors @ query
        for i in np.argsort(-similarity, kind="stable")[:neighbours]:
            for key in self.picked[i]:
                vote[key] += float(similarity[i])
                best.setdefault(key, float(similarity[i]))
        return vote, best

    def near(self, query: np.ndarray, keys: Sequence[str]) -> list[np.ndarray]:
        """votes, nearest and centroid per key (0 where no training query picked it)."""
        votes, nearest, centroid = (np.zeros(len(keys)) for _ in range(3))
        if not self.picked:
            return [votes, nearest, centroid]
        vote, best = self.votes(np.asarray(query, dtype=np.float32))
        index, means = self.centroids
        to_centroid = means @ query
        for j, key in enumerate(keys):
            votes[j], nearest[j] = vote.get(key, 0.0), best.get(key, 0.0)
            if key in index:
                centroid[j] = to_centroid[index[key]]
        return [votes, nearest, centroid]


@dataclass
class PickPrior:
    counts: dict[str, SourceCounts]
    alpha: float = DEFAULT_ALPHA

    @classmethod
    def count(
        cls, queries: Iterable[tuple[str, Sequence[str], Iterable[str], np.ndarray]], alpha: float = DEFAULT_ALPHA
    ) -> PickPrior:
        """From (label source, candidate keys, picked keys, query vector) per training query."""
        counts = {source: SourceCounts() for source in SOURCES}
        for source, candidates, picked, vector in queries:
            part, picked = counts[source], tuple(dict.fromkeys(picked))
            part.queries += 1
            part.appearances.update(set(candidates))
            part.picks.update(picked)
            if picked:
                part.add(picked, vector)
        return cls(counts, alpha)

    def features(self, keys: Sequence[str], query: np.ndarray) -> np.ndarray:
        """A (len(keys), len(FEATURES)) float32 matrix, in FEATURES order, for one query's vector."""
        if not keys:
            return np.zeros((0, len(FEATURES)), np.float32)
        columns = []
        for source in SOURCES:
            part = self.counts[source]
            picks = np.array([part.picks.get(k, 0) for k in keys], dtype=np.float64)
            seen = np.array([part.appearances.get(k, 0) for k in keys], dtype=np.float64)
            columns += [np.log1p(picks * 1000.0 / max(part.queries, 1)), picks / (seen + self.alpha)]
            columns += part.near(np.asarray(query, dtype=np.float32), keys)
        return np.column_stack(columns).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        """Counts only for adapters picked at least once (the others' features are 0 whatever their
        appearances); the picking queries' int8 vectors in base64."""
        sources = {
            source: {"queries": part.queries, "adapters": {k: [n, part.appearances[k]] for k, n in sorted(part.picks.items())},
                     "neighbours": part.neighbours_json()}
            for source, part in self.counts.items()
        }
        return {"alpha": self.alpha, "sources": sources}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PickPrior:
        counts = {}
        for source in SOURCES:
            part = data["sources"][source]
            adapters = part["adapters"]
            try:
                counts[source] = SourceCounts.from_neighbours_json(
                    part["neighbours"], queries=int(part["queries"]), picks=Counter({k: int(v[0]) for k, v in adapters.items()}),
                    appearances=Counter({k: int(v[1]) for k, v in adapters.items()}))
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
        return cls(counts, float(data["alpha"]))
