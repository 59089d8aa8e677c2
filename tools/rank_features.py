"""Features of (query, candidate adapter) pairs for the learned reranker, computed in batch.

Everything comes from what the database already holds at serving time: the query's best cosine to the
stored vectors of each candidate per kind (`db.vectors.best_similarities`), the card fields (name, tags, trigger
words, category, popularity, recommended weight, base model) and the ranks the fused retrieval gave
it (`Hit.evidence["ranks"]`, the RRF score). Nothing is re-embedded but the query itself. The last
features are the pick prior (tools/pick_prior.py): how often training queries, and those most like
this one, picked the adapter.

`FEATURES` is the contract with the model artifact (tools/artifacts/ranker.json): the model stores the
list it was trained with and refuses to score a different one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from loracle.tools.pick_prior import FEATURES as PRIOR_FEATURES
from loracle.tools.pick_prior import PickPrior

FEATURE_VERSION = 5
DENSE_KINDS = ("head", "full", "prompt")
RANK_LISTS = ("full", "head", "prompt", "lexical", "adapted", "neighbours")
MISSING_RANK = 600  # a list that did not return the adapter (lists are at most 300 deep)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of in on at to with and or for by from is are its it this that as into lora style".split())
# tag groups (lower-case tags, or the refiner's category) that tell what kind of adapter it is
TAG_GROUPS: dict[str, frozenset[str]] = {
    "style": frozenset({"style", "art style", "artstyle", "illustration", "painting", "art", "artist"}),
    "concept": frozenset({"concept", "action", "pose", "poses"}),
    "clothing": frozenset({"clothing", "outfit", "costume", "dress", "fashion"}),
    "character": frozenset({"character", "game character", "anime character", "celebrity", "real person", "actress", "person", "vtuber"}),
    "anime": frozenset({"anime", "manga", "cartoon", "anime girl"}),
    "realistic": frozenset({"photorealistic", "realistic", "photography", "photo"}),
    "woman": frozenset({"woman", "female", "girl", "girls", "women", "sexy", "beautiful"}),
    "background": frozenset({"background", "landscape", "scenery", "building", "architecture", "city"}),
    "object": frozenset({"object", "objects", "animal", "vehicle", "food", "weapon"}),
    "tool": frozenset({"tool", "detail", "slider", "lighting", "quality"}),
}

FEATURES: tuple[str, ...] = (
    # dense similarity of the query to each kind of stored vector (best row), and relative to this query's best
    *(f"cos_{k}" for k in DENSE_KINDS),
    *(f"cos_{k}_gap" for k in DENSE_KINDS),
    *(f"cos_{k}_z" for k in DENSE_KINDS),  # standardised over this query's candidates
    "cos_max",
    "has_prompt_vector",
    # the fused retrieval's evidence
    *(f"log_rank_{name}" for name in RANK_LISTS),
    "n_lists",
    "rrf_score",
    "log_fused_pos",
    "lexical_score",  # BM25 of the lexical list (0 where it did not return the adapter)
    "lexical_ratio",  # ... relative to this query's best BM25
    "adapted_score",  # cosine of the trained query map's vector (tools/learned_lists.py; 0 where its list missed the adapter)
    # words of the query found in the card
    "name_cover",  # share of the name's content words found in the query
    "query_in_name",  # share of the query's content words found in name + trigger words
    "trigger_phrase",  # a whole trigger word (>= 3 chars) appears in the query
    "trigger_cover",  # share of trigger-word content words found in the query
    "tag_hits",  # number of tags whose words all appear in the query
    "query_in_tags",  # share of the query's content words found in the tags
    # the card itself
    "log_downloads",
    "log_favorites",
    "rating",
    "log_rating_count",
    "has_recommended_weight",
    "has_trigger_words",
    "n_example_prompts",
    "log_description_chars",
    "base_sd15",
    *(f"group_{g}" for g in TAG_GROUPS),
    # the query
    "query_words",
    "query_commas",
    *PRIOR_FEATURES,
)
INDEX = {name: i for i, name in enumerate(FEATURES)}
PRIOR_COLUMNS = slice(INDEX[PRIOR_FEATURES[0]], INDEX[PRIOR_FEATURES[-1]] + 1)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


@dataclass(frozen=True)
class CardInfo:
    """What the features need of one adapter's card: word sets and static numbers."""

    key: str  # "source:external_id", the pick prior's key
    name_words: frozenset[str]
    trigger_phrases: tuple[str, ...]
    trigger_words: frozenset[str]
    tag_word_sets: tuple[frozenset[str], ...]
    tag_words: frozenset[str]
    static: np.ndarray  # the card-only features, in FEATURES order from "log_downloads" to the last group


_STATIC = FEATURES[INDEX["log_downloads"] : INDEX["query_words"]]
_CARD_SQL = (
    "SELECT id, source || ':' || external_id, name, tags, trigger_words, category, base_model, recommended_weight, downloads, favorites, rating, "
    "rating_count, cardinality(example_prompts), length(description) FROM adapters WHERE id = ANY(%s)"
)


def card_info(row: Sequence) -> CardInfo:
    (_, key, name, tags, triggers, category, base_model, weight, downloads, favorites, rating, rating_count, n_prompts, desc_chars) = row
    lower_tags = {t.lower() for t in tags or []}
    if category:
        lower_tags.add(category.lower())
    static = [
        math.log1p(downloads or 0),
        math.log1p(favorites or 0),
        float(rating or 0.0),
        math.log1p(rating_count or 0),
        float(weight is not None),
        float(bool(triggers)),
        float(min(n_prompts or 0, 5)),
        math.log1p(desc_chars or 0),
        float((base_model or "") in ("SD 1.5", "SD 1.4")),
        *(float(bool(lower_tags & group)) for group in TAG_GROUPS.values()),
    ]
    phrases = tuple(p for p in (t.lower().strip() for t in triggers or []) if len(p) >= 3)
    tag_sets = tuple(s for s in (frozenset(content_words(t)) for t in tags or []) if s)
    return CardInfo(
        key=key,
        name_words=frozenset(content_words(name)),
        trigger_phrases=phrases,
        trigger_words=frozenset(content_words(" ".join(triggers or []))),
        tag_word_sets=tag_sets,
        tag_words=frozenset().union(*tag_sets) if tag_sets else frozenset(),
        static=np.asarray(static, dtype=np.float32),
    )


_CARD_CACHE: dict[tuple, CardInfo] = {}  # keyed by the whole row, so an edited card is simply a new key


def _cached_card_info(row: Sequence) -> CardInfo:
    key = tuple(tuple(v) if isinstance(v, list) else v for v in row)
    info = _CARD_CACHE.get(key)
    if info is None:
        if len(_CARD_CACHE) > 50_000:
            _CARD_CACHE.clear()
        info = _CARD_CACHE[key] = card_info(row)
    return info


def load_cards(conn: psycopg.Connection, adapter_ids: Iterable[int]) -> dict[int, CardInfo]:
    """Card features of the given adapters; the word sets are computed once per card version per process."""
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(_CARD_SQL, (list(adapter_ids),)).fetchall()
    return {row[0]: _cached_card_info(row) for row in rows}


def build_features(
    text: str,
    ids: Sequence[int],
    ranks: Sequence[Mapping[str, int]],
    rrf_scores: Sequence[float],
    cosines: Mapping[str, np.ndarray],
    cards: Mapping[int, CardInfo],
    lexical_scores: Sequence[float] | None = None,
    prior: PickPrior | None = None,
    query: np.ndarray | None = None,
    adapted_scores: Sequence[float] | None = None,
) -> np.ndarray:
    """A (len(ids), len(FEATURES)) float32 matrix; ids in fused order (position = index + 1).

    `cosines`: per DENSE_KINDS kind, the best cosine of the query to each candidate's vectors (NaN where it
    has none): `db.vectors.best_similarities`, in serving and in training alike.
    `lexical_scores`: the lexical list's BM25 per candidate (0 where absent; `Hit.evidence["lexical_score"]`);
    `adapted_scores` likewise the adapted list's cosine (`Hit.evidence["adapted_score"]`).
    `prior`: the pick prior, for the query's vector `query` (None leaves its columns 0: training fills
    them out-of-fold)."""
    n = len(ids)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return x
    cos = {}
    for kind in DENSE_KINDS:
        values = np.asarray(cosines[kind], dtype=np.float32)
        if kind == "prompt":
            x[:, INDEX["has_prompt_vector"]] = ~np.isnan(values)
        best = np.nanmax(values) if not np.all(np.isnan(values)) else 0.0
        values = np.where(np.isnan(values), 0.0, values)
        cos[kind] = values
        x[:, INDEX[f"cos_{kind}"]] = values
        x[:, INDEX[f"cos_{kind}_gap"]] = values - best
        x[:, INDEX[f"cos_{kind}_z"]] = (values - values.mean()) / (values.std() + 1e-3)
    x[:, INDEX["cos_max"]] = np.maximum.reduce([cos[k] for k in DENSE_KINDS])
    for i, adapter_ranks in enumerate(ranks):
        for name in RANK_LISTS:
            x[i, INDEX[f"log_rank_{name}"]] = math.log(adapter_ranks.get(name, MISSING_RANK))
        x[i, INDEX["n_lists"]] = sum(name in adapter_ranks for name in RANK_LISTS)
    x[:, INDEX["rrf_score"]] = np.asarray(rrf_scores, dtype=np.float32) * 100
    x[:, INDEX["log_fused_pos"]] = np.log(np.arange(1, n + 1))
    if lexical_scores is not None:
        lexical = np.asarray(lexical_scores, dtype=np.float32)
        x[:, INDEX["lexical_score"]] = lexical
        x[:, INDEX["lexical_ratio"]] = lexical / max(float(lexical.max()), 1e-6)
    if adapted_scores is not None:
        x[:, INDEX["adapted_score"]] = np.asarray(adapted_scores, dtype=np.float32)

    lowered = text.lower()
    words = content_words(text)
    n_words = max(len(words), 1)
    static_from = INDEX["log_downloads"]
    for i, adapter_id in enumerate(ids):
        card = cards.get(adapter_id)
        if card is None:
            continue
        x[i, INDEX["name_cover"]] = len(words & card.name_words) / max(len(card.name_words), 1)
        x[i, INDEX["query_in_name"]] = len(words & (card.name_words | card.trigger_words)) / n_words
        x[i, INDEX["trigger_phrase"]] = float(any(p in lowered for p in card.trigger_phrases))
        x[i, INDEX["trigger_cover"]] = len(words & card.trigger_words) / max(len(card.trigger_words), 1)
        x[i, INDEX["tag_hits"]] = sum(tag <= words for tag in card.tag_word_sets)
        x[i, INDEX["query_in_tags"]] = len(words & card.tag_words) / n_words
        x[i, static_from : static_from + len(_STATIC)] = card.static
    x[:, INDEX["query_words"]] = len(words)
    x[:, INDEX["query_commas"]] = text.count(",")
    if prior is not None:
        if query is None:
            raise ValueError("the pick prior needs the query's vector")
        x[:, PRIOR_COLUMNS] = prior.features(card_keys(ids, cards), query)
    return x


def card_keys(ids: Sequence[int], cards: Mapping[int, CardInfo]) -> list[str]:
    """The pick prior's keys of these adapters ("" for one whose card is gone)."""
    return [cards[i].key if i in cards else "" for i in ids]
