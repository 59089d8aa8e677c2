"""The learned first stage against the real database and MiniLM, on the tiny catalog of test_catalog_db."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loracle.db.search import SearchFilters, keyed_search
from loracle.evals import rank_train
from loracle.evals.first_stage_train import Example, MapSettings, train_lists
from loracle.evals.rank_train import PRIOR_FOLDS, is_heldout, prior_fold, train
from loracle.tools.learned_lists import load_learned_lists
from loracle.tools.learned_rank import ArtifactError, load_ranker, ranker_for, unfiltered_path
from loracle.tools.memory_search import load_card_vectors
from loracle.tools.retrieve import FUSED_LISTS, RRF_K, retrieve
from tests.integration.test_catalog_db import catalog, write_catalog  # noqa: F401  (fixture)

FAST_MAP = MapSettings(steps=5, random_negatives=8, hard_negatives=4)  # a few steps: these tests check the plumbing


def test_keyed_search_keeps_the_order_and_applies_the_filters(db, catalog) -> None:  # noqa: F811
    keys = [("civitai:7", 3.0), ("civitai:404", 2.9), ("civitai:9", 2.5), ("civitai:6", 2.0), ("civitai:3", 1.5), ("civitai:1", 1.0)]
    with db.connection() as conn:
        ids = dict(conn.execute("SELECT external_id, id FROM adapters").fetchall())
        everything = keyed_search(conn, keys, 10, SearchFilters())
        filtered = keyed_search(conn, keys, 2, SearchFilters(exclude_tags=["character"], exclude_blocklisted=True,
                                                             exclude_ids=[ids["7"]]))
    assert everything == [(ids[e], s) for e, s in [("7", 3.0), ("9", 2.5), ("6", 2.0), ("3", 1.5), ("1", 1.0)]]  # unknown key gone
    assert filtered == [(ids["3"], 1.5), (ids["1"], 1.0)]  # 7 excluded, 9 blocklisted, 6 a character; cut at k


def _learned(db, embedder, pairs: list[tuple[str, str]]):
    with db.connection() as conn:
        cards = load_card_vectors(conn, embedder.name, "full+refined")
        ids = dict(conn.execute("SELECT external_id, id FROM adapters").fetchall())
    vectors = embedder.encode([text for text, _ in pairs])
    examples = [Example(v, (ids[ext],), (f"civitai:{ext}",), "civitai") for v, (_, ext) in zip(vectors, pairs)]
    return train_lists(examples, cards, FAST_MAP), ids


def test_the_trained_strategy_fuses_the_learned_lists(db, embedder, catalog, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    lists, ids = _learned(db, embedder, [("soft washes of colour", "8"), ("a soft wash of colours", "8"), ("anigirl", "6")])
    lists.weights.update({"full": 0.5, "head": 0.25})
    lists.save(tmp_path)
    monkeypatch.setenv("LORACLE_RANKER_PATH", str(tmp_path / "ranker.json"))
    assert load_learned_lists().meta["map_sha256"] == lists.meta["map_sha256"]
    with db.connection() as conn:
        hits = retrieve(conn, embedder, "soft washes of colour", strategy="trained", k=10)
        fused = retrieve(conn, embedder, "soft washes of colour", strategy="fused", k=10)
        filtered = retrieve(conn, embedder, "anigirl", strategy="trained", k=10, filters=SearchFilters(exclude_tags=["character"]))
    by_id = {h.adapter_id: h for h in hits}
    # the two prompts most like this one picked the oil painting: first in the neighbours list, and lifted by it
    assert by_id[ids["8"]].evidence["ranks"]["neighbours"] == 1
    assert [h.adapter_id for h in hits].index(ids["8"]) < [h.adapter_id for h in fused].index(ids["8"])
    assert all("adapted" in h.evidence["ranks"] and "adapted_score" in h.evidence for h in hits)
    assert not any("neighbours" in h.evidence["ranks"] or "adapted" in h.evidence["ranks"] for h in fused)
    assert ids["6"] not in {h.adapter_id for h in filtered}  # a neighbour's pick still passes the filters
    # the trained fusion reweighs the unlearned card-text and head lists by the artifact's weights
    weights = {**dict(FUSED_LISTS), **lists.weights}
    assert (weights["full"], weights["head"], weights["lexical"]) == (0.5, 0.25, 1.0)
    for hit in hits:
        assert hit.score == pytest.approx(sum(weights[name] / (RRF_K + rank) for name, rank in hit.evidence["ranks"].items()))


def _rows(n: int) -> list[dict]:
    pairs = [("watercolor fox", 1), ("neon streets at night", 2), ("retro game sprite", 3), ("a fox in the snow", 4), ("anigirl", 6)]
    return [{"id": f"civitai-image-{i}", "prompt_no_lora": pairs[i % 5][0], "lora_ids": [pairs[i % 5][1]]} for i in range(n)]


def test_training_writes_both_stages_and_cross_fits_the_first(db, embedder, catalog, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    searched_with: dict[str, object] = {}
    collect = rank_train.collect_candidates

    def recording(*args, lists, **kwargs):
        for query in args[2]:
            searched_with[query.id] = lists(query.id)
        return collect(*args, lists=lists, **kwargs)

    monkeypatch.setattr(rank_train, "collect_candidates", recording)
    out = tmp_path / "ranker.json"
    filtered, unfiltered = train(db, embedder, [path], out, exclude_tags=["character"], rounds=10, map_settings=FAST_MAP,
                                 log=lambda *_: None)
    assert (filtered.path, unfiltered.path) == (out, unfiltered_path(out))
    monkeypatch.setenv("LORACLE_RANKER_PATH", str(out))
    served = load_learned_lists()
    training = [r["id"] for r in _rows(60) if not is_heldout(r["id"])]
    # each training prompt's candidates came from the lists of its fold, which never saw it; held-out ones from the served lists
    folds = [fold.lists for fold in filtered.cross_fitted]
    assert [fold.neighbours.queries for fold in folds] == [sum(prior_fold(i) != f for i in training) for f in range(PRIOR_FOLDS)]
    for query_id, lists in searched_with.items():
        if is_heldout(query_id):
            assert lists.neighbours.queries == len(training) and np.array_equal(lists.query_map, served.query_map)
        else:
            assert lists is folds[prior_fold(query_id)]
    # the unfiltered ranker serves searches that exclude no tag, and learned from the character's picks
    assert ranker_for(SearchFilters()).meta["training"]["exclude_tags"] == []
    assert ranker_for(SearchFilters(exclude_tags=["character"])) is load_ranker(out)
    assert unfiltered.artifact["training"]["positives"] > filtered.artifact["training"]["positives"]
    assert set(json.loads((out.parent / "first_stage.json").read_text())["heldout"]) == {"filtered", "unfiltered"}

    from loracle.agent.planner import SelectionSettings, offline_ranking
    from loracle.tools.learned_rank import save_artifact

    for trained, min_score in ((filtered, 0.2), (unfiltered, 0.05)):
        save_artifact({**trained.artifact, "selection": {"settings": {"min_score": min_score}}}, trained.path)
    assert offline_ranking("learned", ["character"])[1].min_score == 0.2
    assert offline_ranking("learned", [])[1].min_score == 0.05
    assert offline_ranking("rerank", [])[0] == "rerank"
    # learned where it was trained: on this catalog, not with the committed artifacts (trained on Civitai's)
    assert offline_ranking("learned", ["character"], db)[0] == "learned"
    monkeypatch.delenv("LORACLE_RANKER_PATH")
    assert offline_ranking("learned", ["character"], db) == ("rerank", SelectionSettings())
    monkeypatch.setenv("LORACLE_RANKER_PATH", str(out))

    # a ranker never scores features of another first stage than the one it was trained on
    other, _ = _learned(db, embedder, [("neon", "2")])
    other.save(out.parent)
    with db.connection() as conn, pytest.raises(ArtifactError, match="another first stage"):
        retrieve(conn, embedder, "watercolor fox", strategy="learned", k=5)


def test_cross_validation_searches_every_setting_on_the_training_split(db, embedder, catalog, tmp_path: Path) -> None:  # noqa: F811
    from dataclasses import replace

    from loracle.evals.first_stage_cv import cross_validate

    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    grid = (replace(FAST_MAP, neighbours_weight=0.0), replace(FAST_MAP, adapted_weight=0.0))
    rows = cross_validate(db, embedder, [path], grid, exclude_tags=["character"], ef_search=800, log=lambda *_: None)
    assert [row["settings"] for row in rows] == list(grid)
    assert all(set(row) == {"settings", "seconds", "civitai"} for row in rows)  # dev-less file: one source
    assert all(0.0 < row["civitai"]["R@150"] <= 1.0 and row["civitai"]["R@10"] <= row["civitai"]["R@150"] for row in rows)
