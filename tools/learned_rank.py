"""The learned reranker: a small model over tools/rank_features.py, loaded from a portable JSON artifact.

The artifact (tools/artifacts/ranker.json, written by `loracle rank train`) holds the model as text
(gradient-boosted trees in LightGBM's model format, or logistic-regression coefficients), the feature
list and versions, the pick prior (tools/pick_prior.py: counts, and the picking training queries'
vectors), how it was trained and evaluated,
and the offline planner's selection thresholds calibrated for its scores. No pickle anywhere.

A hit's new score is the model's probability that the adapter is one a person (or Stylus's
composer) would pick for the text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from loracle.db.vectors import best_similarities
from loracle.tools.pick_prior import PickPrior
from loracle.tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, CardInfo, build_features, load_cards

ARTIFACT_FORMAT = "loracle-ranker"
ARTIFACT_VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "artifacts" / "ranker.json"


def artifact_path() -> Path:
    return Path(os.environ.get("LORACLE_RANKER_PATH") or DEFAULT_PATH)


class ArtifactError(ValueError):
    pass


class LightGBMModel:
    """A LightGBM booster kept in LightGBM's own text model format (no pickle) and scored by LightGBM:
    150 candidates x 300 trees in about 1 ms, half the time of walking the trees in numpy."""

    def __init__(self, text: str) -> None:
        import lightgbm

        try:
            self.booster = lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError as error:
            raise ArtifactError(f"the artifact's LightGBM model does not load ({error})") from None
        if self.booster.num_feature() != len(FEATURES):
            raise ArtifactError(f"the model reads {self.booster.num_feature()} features, the feature list has {len(FEATURES)}")

    @staticmethod
    def to_json(booster) -> dict[str, Any]:
        return {"type": "lightgbm", "text": booster.model_to_string()}

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, raw_score=True, num_threads=1)


class Logistic:
    def __init__(self, mean: list[float], scale: list[float], coef: list[float], intercept: float) -> None:
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), float(intercept)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return ((np.nan_to_num(x.astype(np.float64)) - self.mean) / self.scale) @ self.coef + self.intercept


Model = LightGBMModel | Logistic


def load_model(model: dict[str, Any]) -> Model:
    if model["type"] == "lightgbm":
        return LightGBMModel(model["text"])
    if model["type"] == "logistic":
        return Logistic(model["mean"], model["scale"], model["coef"], model["intercept"])
    raise ArtifactError(f"unknown model type {model['type']!r}")


class Ranker:
    """A loaded artifact: `score(features)` gives probabilities; `meta` is the rest of the JSON."""

    def __init__(self, artifact: dict[str, Any]) -> None:
        if artifact.get("format") != ARTIFACT_FORMAT or artifact.get("version") != ARTIFACT_VERSION:
            raise ArtifactError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} artifact")
        if artifact.get("feature_version") != FEATURE_VERSION or tuple(artifact.get("features", ())) != FEATURES:
            raise ArtifactError("the artifact was trained on another feature list; run `loracle rank train` again")
        self.model = load_model(artifact["model"])
        try:
            self.prior = PickPrior.from_json(artifact["prior"])
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"the artifact's pick prior is missing or malformed ({error!r})") from None
        self.meta = artifact
        self.embedding_model: str | None = (artifact.get("training") or {}).get("embedding_model")
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


@contextmanager
def scoring_with(model: Model, prior: PickPrior) -> Iterator[None]:
    """Score with another model and pick prior for a while: calibration scores each training query with
    a model and prior that never saw it (its cross-fitted fold), as a new prompt would be scored."""
    ranker = load_ranker()
    saved = ranker.model, ranker.prior
    ranker.model, ranker.prior = model, prior
    try:
        yield
    finally:
        ranker.model, ranker.prior = saved


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
    prior: PickPrior | None = None,
) -> np.ndarray:
    """Features of fused hits (in their fused order) for one text, from the database (or from `cosines`,
    aligned with the hits, and `cards` already read for these adapters and maybe more) and `prior`."""
    ids = [h.adapter_id for h in hits]
    if cosines is None:
        [cosines] = best_similarities(conn, model_name, [(query, ids)], DENSE_KINDS)
    cards = cards if cards is not None else load_cards(conn, ids)
    ranks = [h.evidence.get("ranks", {}) for h in hits]
    lexical = [h.evidence.get("lexical_score", 0.0) for h in hits]
    return build_features(text, ids, ranks, [h.score for h in hits], cosines, cards, lexical, prior, query)


def rerank_learned(
    conn: psycopg.Connection, embedder, text: str, query: np.ndarray, hits: list,
    cosines: Mapping[str, np.ndarray] | None = None, cards: Mapping[int, CardInfo] | None = None,
) -> list:
    """The hits re-ordered by the learned score (a probability); evidence keeps the fused score."""
    if not hits:
        return hits
    ranker = load_ranker()
    if ranker.embedding_model and embedder.name != ranker.embedding_model:
        raise ArtifactError(f"the ranker was trained on {ranker.embedding_model} embeddings, the catalog is searched with "
                            f"{embedder.name}; run `loracle rank train` again")
    scores = ranker.score(hit_features(conn, embedder.name, text, query, hits, cosines, cards, ranker.prior))
    for hit, score in zip(hits, scores):
        hit.evidence["fused_score"] = round(hit.score, 5)
        hit.score = float(score)
    return sorted(hits, key=lambda h: (-h.score, h.adapter_id))


__all__ = ["DENSE_KINDS", "Ranker", "ArtifactError", "available", "load_ranker", "rerank_learned", "save_artifact"]
