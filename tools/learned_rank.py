"""The learned reranker: a small model over tools/rank_features.py, loaded from a portable JSON artifact.

The artifact (tools/models/ranker.json, written by `loracle rank train`) holds the model as plain
numbers (gradient-boosted trees as node arrays, or logistic-regression coefficients), the feature
list and versions, how it was trained and evaluated, and the offline planner's selection thresholds
calibrated for its scores. No pickle: scoring is a few vectorised numpy gathers (well under a
millisecond for 150 candidates).

A hit's new score is the model's probability that the adapter is one a person (or Stylus's
composer) would pick for the text.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import psycopg

from db.embeddings import best_similarities
from tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, CardInfo, build_features, load_cards

ARTIFACT_FORMAT = "loracle-ranker"
ARTIFACT_VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "models" / "ranker.json"


def artifact_path() -> Path:
    return Path(os.environ.get("LORACLE_RANKER_PATH") or DEFAULT_PATH)


class ArtifactError(ValueError):
    pass


class TreeEnsemble:
    """Additive binary-logit trees (sklearn HistGradientBoosting's layout), all trees walked at once."""

    def __init__(self, baseline: float, trees: list[dict[str, list]]) -> None:
        self.baseline = float(baseline)
        width = max(len(t["feature"]) for t in trees) if trees else 1
        shape = (max(len(trees), 1), width)
        self.feature = np.zeros(shape, dtype=np.int64)
        self.threshold = np.full(shape, np.inf)
        self.missing_left = np.ones(shape, dtype=bool)
        self.value = np.zeros(shape)
        node_ids = np.arange(width)
        self.left = np.tile(node_ids, (shape[0], 1))  # leaves (and padding) point at themselves
        self.right = self.left.copy()
        for t, tree in enumerate(trees):
            n = len(tree["feature"])
            leaf = np.asarray(tree["leaf"], dtype=bool)
            self.feature[t, :n] = np.where(leaf, 0, tree["feature"])
            self.threshold[t, :n] = np.where(leaf, np.inf, np.asarray(tree["threshold"], dtype=float))
            self.missing_left[t, :n] = tree["missing_left"]
            self.value[t, :n] = tree["value"]
            self.left[t, :n] = np.where(leaf, np.arange(n), tree["left"])
            self.right[t, :n] = np.where(leaf, np.arange(n), tree["right"])
        # flat layout for scoring: a (tree, row) pair walks one node per step, through two 1-D gathers
        # (children of node i at 2i, 2i+1); pairs that reached a leaf drop out, so a step costs what is
        # still walking (most leaves are shallow) rather than the deepest tree's depth for every pair.
        offsets = (np.arange(shape[0]) * width)[:, None]
        self._roots = offsets.ravel()
        self._flat_feature = self.feature.ravel()
        self._flat_threshold = self.threshold.ravel()
        self._flat_missing_left = self.missing_left.ravel()
        self._flat_leaf = (self.left == node_ids).ravel()
        self._children = np.stack([(self.right + offsets).ravel(), (self.left + offsets).ravel()], axis=1).ravel()
        self._flat_value = self.value.ravel()

    def raw(self, x: np.ndarray) -> np.ndarray:
        n, n_features = x.shape
        values = x.astype(np.float64).ravel()
        node = np.repeat(self._roots, n)  # (trees * rows,) flat node ids, tree-major
        cell = np.tile(np.arange(n) * n_features, len(self._roots))  # each pair's row offset into `values`
        pair = np.arange(node.size)
        leaf_of = np.empty(node.size, dtype=np.int64)
        while node.size:
            at_leaf = self._flat_leaf[node]
            leaf_of[pair[at_leaf]] = node[at_leaf]
            walking = ~at_leaf
            node, cell, pair = node[walking], cell[walking], pair[walking]
            value = values[cell + self._flat_feature[node]]
            go_left = np.where(np.isnan(value), self._flat_missing_left[node], value <= self._flat_threshold[node])
            node = self._children[2 * node + go_left]
        return self.baseline + self._flat_value[leaf_of].reshape(len(self._roots), n).sum(axis=0)


class Logistic:
    def __init__(self, mean: list[float], scale: list[float], coef: list[float], intercept: float) -> None:
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), float(intercept)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return ((np.nan_to_num(x.astype(np.float64)) - self.mean) / self.scale) @ self.coef + self.intercept


class Ranker:
    """A loaded artifact: `score(features)` gives probabilities; `meta` is the rest of the JSON."""

    def __init__(self, artifact: dict[str, Any]) -> None:
        if artifact.get("format") != ARTIFACT_FORMAT or artifact.get("version") != ARTIFACT_VERSION:
            raise ArtifactError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} artifact")
        if artifact.get("feature_version") != FEATURE_VERSION or tuple(artifact.get("features", ())) != FEATURES:
            raise ArtifactError("the artifact was trained on another feature list; run `loracle rank train` again")
        model = artifact["model"]
        if model["type"] == "gbdt":
            self.model: TreeEnsemble | Logistic = TreeEnsemble(model["baseline"], model["trees"])
        elif model["type"] == "logistic":
            self.model = Logistic(model["mean"], model["scale"], model["coef"], model["intercept"])
        else:
            raise ArtifactError(f"unknown model type {model['type']!r}")
        self.meta = artifact
        self.selection: dict[str, Any] = artifact.get("selection") or {}

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.model.raw(np.asarray(x, dtype=np.float32))

    def score(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.raw(x)))


def save_artifact(artifact: dict[str, Any], path: Path) -> None:
    Ranker(artifact)  # validate before writing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact, separators=(",", ":")) + "\n", encoding="utf-8")


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Ranker:
    return Ranker(json.loads(Path(path).read_text(encoding="utf-8")))


def load_ranker(path: Path | None = None) -> Ranker:
    path = path or artifact_path()
    if not path.is_file():
        raise ArtifactError(f"no ranker artifact at {path}; run `loracle rank train`")
    return _load(str(path), path.stat().st_mtime)


def available(path: Path | None = None) -> bool:
    """True when a valid artifact is there (the planner then uses strategy "learned")."""
    try:
        load_ranker(path)
    except (ArtifactError, OSError, KeyError, ValueError):
        return False
    return True


def hit_features(
    conn: psycopg.Connection, model_name: str, text: str, query: np.ndarray, hits: list,
    cosines: Mapping[str, np.ndarray] | None = None, cards: Mapping[int, CardInfo] | None = None,
) -> np.ndarray:
    """Features of fused hits (in their fused order) for one text, from the database (or from `cosines`,
    aligned with the hits, and `cards` already read for these adapters and maybe more)."""
    ids = [h.adapter_id for h in hits]
    if cosines is None:
        [cosines] = best_similarities(conn, model_name, [(query, ids)], DENSE_KINDS)
    cards = cards if cards is not None else load_cards(conn, ids)
    ranks = [h.evidence.get("ranks", {}) for h in hits]
    lexical = [h.evidence.get("lexical_score", 0.0) for h in hits]
    return build_features(text, ids, ranks, [h.score for h in hits], cosines, cards, lexical)


def rerank_learned(
    conn: psycopg.Connection, embedder, text: str, query: np.ndarray, hits: list,
    cosines: Mapping[str, np.ndarray] | None = None, cards: Mapping[int, CardInfo] | None = None,
) -> list:
    """The hits re-ordered by the learned score (a probability); evidence keeps the fused score."""
    if not hits:
        return hits
    ranker = load_ranker()
    scores = ranker.score(hit_features(conn, embedder.name, text, query, hits, cosines, cards))
    for hit, score in zip(hits, scores):
        hit.evidence["fused_score"] = round(hit.score, 5)
        hit.score = float(score)
    return sorted(hits, key=lambda h: (-h.score, h.adapter_id))


__all__ = ["DENSE_KINDS", "Ranker", "ArtifactError", "available", "load_ranker", "rerank_learned", "save_artifact"]
