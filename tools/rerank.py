"""The offline reranker: re-score fused candidates with every piece of evidence an adapter has.

Evidence: cosine similarity of the query to the adapter's head text, full card text, best example
prompt and refined description (against the vectors already stored, in the database, so nothing is
re-embedded), words of
the query found in the adapter's name, trigger words and tags, and the fused rank itself.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import psycopg

from loracle.db.catalog import get_card_heads
from loracle.db.vectors import best_similarities
from loracle.tools.embedder import Embedder

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of in on at to with and or for by from is are its it this that as into".split())
COSINE_KINDS = ("head", "full", "prompt", "refined")
WEIGHTS = {"head": 1.0, "full": 0.6, "prompt": 0.6, "refined": 0.3, "name_terms": 0.15, "tag_terms": 0.1, "fused": 8.0}


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


@lru_cache(maxsize=65536)
def _card_words(text: str) -> frozenset[str]:
    """content_words of a card's name or tags, kept: the same candidates come back for every task."""
    return frozenset(content_words(text))


def rerank(
    conn: psycopg.Connection, embedder: Embedder, text: str, query: np.ndarray, hits: list, cards: dict | None = None,
    cosines: dict[str, np.ndarray] | None = None, *, refined: bool = True,
) -> list:
    """Return the hits re-ordered by the evidence score; each hit's evidence records the features.

    `cards` (name, tags, trigger words: `db.catalog.get_card_heads`) may hold more adapters than the
    hits (read once for several texts); `cosines` (per COSINE_KINDS kind, aligned with the hits:
    `db.vectors.best_similarities`) are read here when not given. `refined=False` ignores
    refined-description vectors (retrieval as before `loracle catalog refine`)."""
    if not hits:
        return hits
    ids = [h.adapter_id for h in hits]
    if cosines is None:
        [cosines] = best_similarities(conn, embedder.name, [(query, ids)], COSINE_KINDS)
    cards = cards if cards is not None else get_card_heads(conn, ids)
    words = content_words(text)
    n_words = max(len(words), 1)
    cosines = {kind: np.nan_to_num(cosines[kind], nan=0.0) for kind in COSINE_KINDS}  # 0 where it has none
    for i, hit in enumerate(hits):
        card = cards[hit.adapter_id]
        name_words = _card_words(" ".join([card["name"], *card["trigger_words"]]))
        tag_words = _card_words(" ".join(card["tags"]))
        features = {
            "head": float(cosines["head"][i]),
            "full": float(cosines["full"][i]),
            "prompt": float(cosines["prompt"][i]),
            "refined": float(cosines["refined"][i]) if refined else 0.0,
            "name_terms": len(words & name_words) / n_words,
            "tag_terms": len(words & tag_words) / n_words,
            "fused": hit.score,
        }
        hit.evidence["features"] = {k: round(v, 4) for k, v in features.items()}
        hit.score = sum(WEIGHTS[k] * v for k, v in features.items())
    return sorted(hits, key=lambda h: (-h.score, h.adapter_id))
