"""The learned reranker: a small model over tools/rank_features.py, loaded from a portable JSON artifact.

The artifact (tools/artifacts/ranker.json, written by `loracle rank train`) holds the model as text
(gradient-boosted trees in LightGBM's model format, or logistic-regression coefficients), the feature
list and versions, the pick prior (tools/pick_prior.py: counts, and the picking training queries'
vectors), how it was trained and evaluated (the depth of fused candidates it re-scores, the trained
first stage it saw: tools/learned_lists.py, in the same folder), and the offline planner's selection
thresholds calibrated for its scores. `ranker-unfiltered.json` beside it is the same trained without
the character/celebrity filter, for searches that exclude no tag. No pickle anywhere.

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

from loracle.db.search import SearchFilters
from loracle.db.vectors import best_similarities
from loracle.tools.learned_lists import LearnedLists, load_learned_lists
from loracle.tools.pick_prior import PickPrior
from loracle.tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, CardInfo, build_features, load_cards

ARTIFACT_FORMAT = "loracle-ranker"
ARTIFACT_VERSION = 1
DEFAULT_DEPTH = 150
DEFAULT_PATH = Path(__file__).resolve().parent / "artifacts" / "ranker.json"


def artifact_path() -> Path:
    return Path(os.environ.get("LORACLE_RANKER_PATH") or DEFAULT_PATH)


def unfiltered_path(path: Path | None = None) -> Path:
    """The variant trained without the character/celebrity filter, beside the filtered one."""
    path = path or artifact_path()
    return path.with_name(f"{path.stem}-unfiltered{path.suffix}")


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
        training = artifact.get("training") or {}
        self.embedding_model: str | None = training.get("embedding_model")
        self.depth: int = int(training.get("depth", DEFAULT_DEPTH))  # the fused candidates it was trained to re-score
        self.first_stage: str | None = training.get("first_stage")  # the sha256 of the learned lists' map it saw
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


def ranker_for(filters: SearchFilters) -> Ranker:
    """The model trained with the filter in use: the unfiltered variant when no tag is excluded and it
    was trained, the default (filtered) one otherwise."""
    if not filters.exclude_tags and unfiltered_path().is_file():
        return load_ranker(unfiltered_path())
    return load_ranker()


@contextmanager
def scoring_with(model: Model, prior: PickPrior, lists: LearnedLists | None = None, filtered: bool = True) -> Iterator[None]:
    """Score with another model, pick prior and learned first-stage lists for a while: calibration scores
    each training query with those of its cross-fitted fold, which never saw it, as a new prompt would be
    scored. `filtered` says which ranker variant they stand in for."""
    ranker = load_ranker() if filtered else load_ranker(unfiltered_path())
    first_stage = load_learned_lists()
    saved = ranker.model, ranker.prior, first_stage.query_map, first_stage.neighbours
    ranker.model, ranker.prior = model, prior
    if lists is not None:
        first_stage.query_map, first_stage.neighbours = lists.query_map, lists.neighbours
    try:
        yield
    finally:
        ranker.model, ranker.prior, first_stage.query_map, first_stage.neighbours = saved


def available(path: Path | None = None) -> bool:
    """True when a valid artifact and the first stage it was trained on are there (the planner then uses
    strategy "learned")."""
    try:
        load_ranker(path)
        load_learned_lists(path.parent if path else None)
    except (ArtifactError, OSError, KeyError, ValueError):
        return False
    return True


def fits_catalog(conn: psycopg.Connection, ranker: Ranker, share: float = 0.5) -> bool:
    """True when the catalog holds at least `share` of the adapters the ranker's training prompts picked:
    its pick prior and learned lists only know those, and on a catalog it never saw (the bundled digits
    world, a small private one) it ranks worse than the hand-weighted reranker."""
    picked = sorted({key for part in ranker.prior.counts.values() for key in part.picks})
    if not picked:
        return False
    sources, external_ids = zip(*(key.split(":", 1) for key in picked))
    [(found,)] = conn.execute("SELECT count(*) FROM adapters JOIN unnest(%s::text[], %s::text[]) AS k(source, external_id) "
                              "USING (source, external_id)", (list(sources), list(external_ids))).fetchall()
    return found >= share * len(picked)


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
    adapted = [h.evidence.get("adapted_score", 0.0) for h in hits]
    return build_features(text, ids, ranks, [h.score for h in hits], cosines, cards, lexical, prior, query, adapted)


def check_compatible(ranker: Ranker, embedder_name: str, lists: LearnedLists) -> None:
    """The ranker scores features of one embedding model and one trained first stage: refuse others."""
    if ranker.embedding_model and embedder_name != ranker.embedding_model:
        raise ArtifactError(f"the ranker was trained on {ranker.embedding_model} embeddings, the catalog is searched with "
                            f"{embedder_name}; run `loracle rank train` again")
    if ranker.first_stage and ranker.first_stage != lists.meta.get("map_sha256"):
        raise ArtifactError("the ranker was trained on another first stage than the one in its folder; run `loracle rank train` again")


def rerank_learned(
    conn: psycopg.Connection, embedder, text: str, query: np.ndarray, hits: list,
    cosines: Mapping[str, np.ndarray] | None = None, cards: Mapping[int, CardInfo] | None = None,
    ranker: Ranker | None = None,
) -> list:
    """The hits re-ordered by the learned score (a probability) of `ranker` (by default the filtered
    model); evidence keeps the fused score."""
    if not hits:
        return hits
    ranker = ranker or load_ranker()
    check_compatible(ranker, embedder.name, load_learned_lists())
    scores = ranker.score(hit_features(conn, embedder.name, text, query, hits, cosines, cards, ranker.prior))
    for hit, score in zip(hits, scores):
        hit.evidence["fused_score"] = round(hit.score, 5)
        hit.score = float(score)
    return sorted(hits, key=lambda h: (-h.score, h.adapter_id))


__all__ = ["DENSE_KINDS", "Ranker", "ArtifactError", "available", "fits_catalog", "load_ranker", "ranker_for", "rerank_learned", "save_artifact"]
