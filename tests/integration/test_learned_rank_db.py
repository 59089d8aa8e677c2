"""The learned reranker against the real database and MiniLM, on the tiny catalog of test_catalog_db."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loracle.db.search import ListQuery, SearchFilters, dense_search, keyed_search, lexical_search, search_lists
from loracle.db.vectors import best_similarities
from loracle.evals.first_stage_train import MapSettings
from loracle.evals.queries import load_queries
from loracle.evals.rank_train import PRIOR_FOLDS, attach_features, collect_candidates, fit_lightgbm, is_heldout, train
from loracle.tools.learned_rank import DEFAULT_PATH, hit_features, load_ranker, ranker_for, scoring_with
from loracle.tools.rank_features import INDEX, PRIOR_COLUMNS
from loracle.tools.retrieve import _search, _search_many, retrieve
from tests.integration.test_catalog_db import catalog, write_catalog  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not DEFAULT_PATH.exists(), reason="no committed ranker artifact")
FAST_MAP = MapSettings(steps=5, random_negatives=8, hard_negatives=4)  # a few steps: these tests check the plumbing


def test_learned_strategy_scores_and_orders(db, embedder, catalog) -> None:  # noqa: F811
    with db.connection() as conn:
        hits = retrieve(conn, embedder, "a watercolor painting of a fox", strategy="learned", k=5)
        fused = retrieve(conn, embedder, "a watercolor painting of a fox", strategy="fused", k=150)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert hits[0].name in ("Watercolor Painting Style", "Red Fox")
    assert {h.adapter_id for h in hits} <= {h.adapter_id for h in fused}  # a reranking of the fused candidates
    assert all("fused_score" in h.evidence for h in hits)


def test_serving_features_match_the_database(db, embedder, catalog) -> None:  # noqa: F811
    text = "misty forest, watercolor"
    vector = embedder.encode([text])[0]
    with db.connection() as conn:
        hits = retrieve(conn, embedder, text, strategy="trained", k=150)  # the first stage the ranker re-scores
        ranker = ranker_for(SearchFilters())  # no tag excluded: the unfiltered variant
        x = hit_features(conn, embedder.name, text, vector, hits, prior=ranker.prior)
        head = dict(dense_search(conn, embedder.name, "head", vector, 10, SearchFilters(), exact=True))
        learned = {h.adapter_id: h.score for h in retrieve(conn, embedder, text, strategy="learned", k=150)}
    assert len(hits) == 10
    for row, hit in enumerate(hits):
        assert x[row, INDEX["cos_head"]] == pytest.approx(head[hit.adapter_id], abs=2e-3)  # halfvec rounding
        assert x[row, INDEX["trigger_phrase"]] == float(hit.name in ("Misty Forest", "Watercolor Painting Style"))
    # the strategy's scores are the artifact's model applied to exactly these features
    assert ranker.meta["training"]["exclude_tags"] == []
    np.testing.assert_allclose(ranker.score(x), [learned[h.adapter_id] for h in hits], rtol=1e-5)


def test_best_similarities_are_the_best_cosine_per_kind(db, embedder, catalog) -> None:  # noqa: F811
    vector = embedder.encode(["a fox in the snow"])[0]
    with db.connection() as conn:
        rows = conn.execute("SELECT adapter_id, kind, embedding::vector FROM adapter_embeddings WHERE model = %s",
                            (embedder.name,)).fetchall()
        ids = sorted({adapter_id for adapter_id, _, _ in rows}) + [10**9]  # the last has no vectors at all
        [got] = best_similarities(conn, embedder.name, [(3 * vector, ids)], ("head", "prompt"))
    query = vector / np.linalg.norm(vector)
    for kind in ("head", "prompt"):
        expected = np.full(len(ids), np.nan)
        for adapter_id, row_kind, stored in rows:
            if row_kind == kind:
                i = ids.index(adapter_id)
                expected[i] = np.nanmax([expected[i], stored.to_numpy() @ query])
        assert np.isnan(expected).any() and not np.isnan(expected).all()  # some adapters lack the kind
        np.testing.assert_allclose(got[kind], expected, atol=1e-5)  # NaN exactly where expected


def test_training_pipeline_learns_from_labels(db, embedder, catalog, tmp_path: Path) -> None:  # noqa: F811
    rows = [{"id": f"civitai-image-{i}", "prompt_no_lora": p, "lora_ids": [ext]} for i, (p, ext) in enumerate([
        ("watercolor fox", 1), ("neon streets at night", 2), ("retro game sprite", 3), ("a fox in the snow", 4),
        ("knight in japanese armor", 5), ("foggy woods", 7), ("impasto portrait", 8), ("soft washes of paint", 1),
    ])]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = collect_candidates(db, embedder, load_queries(path), SearchFilters(exclude_blocklisted=True))
    assert len(items) == 8 and all(c.labels.sum() == 1 for c in items)  # every label is among the candidates
    attach_features(db, embedder.name, items)
    x = np.concatenate([c.features for c in items])
    y = np.concatenate([c.labels for c in items])
    booster = fit_lightgbm(np.tile(x, (10, 1)), np.tile(y, 10), rounds=20, min_child_samples=5)
    assert booster.predict(x)[y == 1].mean() > booster.predict(x)[y == 0].mean()


def test_train_writes_an_artifact_that_serves_with_a_leak_free_prior(db, embedder, catalog, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    pairs = [("watercolor fox", 1), ("neon streets at night", 2), ("retro game sprite", 3), ("a fox in the snow", 4)]
    rows = [{"id": f"civitai-image-{i}", "prompt_no_lora": pairs[i % 4][0], "lora_ids": [pairs[i % 4][1]]} for i in range(60)]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ranker.json"
    [trained] = train(db, embedder, [path], out, exclude_tags=[], rounds=10, map_settings=FAST_MAP, log=lambda *_: None)
    artifact, cross_fitted = trained.artifact, trained.cross_fitted
    priors = [fold.prior for fold in cross_fitted]
    ranker = load_ranker(out)
    picks = ranker.prior.counts["civitai"].picks
    trained = [r for r in rows if not is_heldout(r["id"])]
    # only training queries are counted, each for its one label, keyed by source and external id
    assert sum(picks.values()) == len(trained) == artifact["training"]["queries"] < len(rows)
    assert set(picks) == {f"civitai:{r['lora_ids'][0]}" for r in trained}
    assert len(priors) == PRIOR_FOLDS and all(sum(p.counts["civitai"].picks.values()) < len(trained) for p in priors)

    monkeypatch.setenv("LORACLE_RANKER_PATH", str(out))
    text = "watercolor fox"
    vector = embedder.encode([text])[0]
    with db.connection() as conn:
        first = retrieve(conn, embedder, text, strategy="trained", k=150)  # with the first stage trained beside it
        learned = {h.adapter_id: h.score for h in retrieve(conn, embedder, text, strategy="learned", k=150)}
        x = hit_features(conn, embedder.name, text, vector, first, prior=ranker.prior)
        model = ranker.model
        with scoring_with(*cross_fitted[0]):
            assert load_ranker(out).prior is priors[0] and load_ranker(out).model is cross_fitted[0][0]
        assert load_ranker(out).prior is ranker.prior and load_ranker(out).model is model  # restored
    assert x[:, PRIOR_COLUMNS].any()  # the prior reaches the served features
    np.testing.assert_allclose(ranker.score(x), [learned[h.adapter_id] for h in first], rtol=1e-5)


class _Recording:
    """A model that notes which prior fold's model scored, then scores as that model does."""

    def __init__(self, model, fold: int, log: list[int]) -> None:
        self.model, self.fold, self.log = model, fold, log

    def raw(self, x: np.ndarray) -> np.ndarray:
        self.log.append(self.fold)
        return self.model.raw(x)


class _MustNotScore:
    def raw(self, x: np.ndarray) -> np.ndarray:
        raise AssertionError("calibration scored with the final model, which saw the query's labels")


def test_calibration_scores_each_query_with_the_model_that_never_saw_it(db, embedder, catalog, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import Settings
    from loracle.evals.rank_train import calibrate_selection, prior_fold

    pairs = [("watercolor fox", 1), ("neon streets at night", 2), ("retro game sprite", 3), ("a fox in the snow", 4)]
    rows = [{"id": f"coco-{i}", "prompt": pairs[i % 4][0], "topics": {"t": [pairs[i % 4][1]]}} for i in range(40)]
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ranker.json"
    [trained] = train(db, embedder, [path], out, exclude_tags=[], rounds=10, map_settings=FAST_MAP, log=lambda *_: None)
    monkeypatch.setenv("LORACLE_RANKER_PATH", str(out))
    load_ranker(out).model = _MustNotScore()
    log: list[int] = []
    recording = [fold._replace(model=_Recording(fold.model, number, log)) for number, fold in enumerate(trained.cross_fitted)]
    ctx = build_context(Settings(home=tmp_path / "home", base_model="tiny", ranker="learned", llm_model=None), db)
    ctx.base_models = None
    calibration = calibrate_selection(ctx, path, recording, target_picks=1.0, log=lambda *_: None)
    calibrated = [r["id"] for r in rows if not is_heldout(r["id"])]
    assert calibration["queries"] == len(calibrated)
    assert set(log) == {prior_fold(i) for i in calibrated} and len(set(log)) > 1
    assert isinstance(load_ranker(out).model, _MustNotScore)  # restored after each query


def test_pipelined_lists_equal_one_by_one(db, embedder, catalog) -> None:  # noqa: F811
    texts = ["misty forest, watercolor", "a red fox", "neon streets at night"]
    vectors = embedder.encode(texts)
    filters = SearchFilters(exclude_blocklisted=True)
    queries = [ListQuery(kind, 10, vector=v) for v in vectors for kind in ("head", "full", "prompt")]
    queries += [ListQuery("lexical", 10, text=t) for t in texts]
    queries += [ListQuery("keys", 10, keys=(("civitai:7", 2.5), ("civitai:9", 2.0), ("civitai:3", 1.0)))]
    with db.connections(3) as (conn, *spare):
        together = search_lists(conn, embedder.name, queries, filters)
        spread = search_lists(conn, embedder.name, queries, filters, spare=spare)  # dealt out over 3 connections
        alone = [lexical_search(conn, q.text, 10, filters) if q.kind == "lexical"
                 else keyed_search(conn, q.keys, 10, filters) if q.kind == "keys"
                 else dense_search(conn, embedder.name, q.kind, q.vector, 10, filters) for q in queries]
    assert len(spare) == 2 and together == alone == spread and any(together)


def test_several_texts_at_once_equal_each_alone(db, embedder, catalog) -> None:  # noqa: F811
    texts = ["watercolor", "a fox in the snow", "retro game sprite"]
    vectors = embedder.encode(texts)
    filters = SearchFilters(exclude_blocklisted=True)
    for strategy in ("learned", "trained", "rerank", "fused", "dense"):
        with db.connection() as conn:
            together = _search_many(conn, embedder, texts, vectors, strategy, 5, filters, 200)
            alone = [_search(conn, embedder, t, v, strategy, 5, filters, 200) for t, v in zip(texts, vectors)]
        assert [[h.as_dict() for h in hits] for hits in together] == [[h.as_dict() for h in hits] for hits in alone], strategy
        assert all(together), strategy
