"""The first stage's learned lists without a database: training learns a map, the artifact round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loracle.evals.first_stage_train import Example, MapSettings, neighbours_of, train_lists, train_query_map
from loracle.tools.learned_lists import META_FILE, FirstStageError, LearnedLists, load_from
from loracle.tools.memory_search import CardVectors
from loracle.tools.pick_prior import SourceCounts

DIMS = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _world(seed: int = 0, adapters: int = 60, prompts: int = 300):
    """Adapters with one card vector each; a prompt's vector is a fixed rotation of the card it picks, plus
    noise, so MiniLM-like raw cosines mostly point at the wrong adapter and a linear map can fix that."""
    rng = np.random.default_rng(seed)
    cards = _unit(rng.normal(size=(adapters, DIMS))).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIMS, DIMS)))
    picks = rng.integers(0, adapters, size=prompts)
    queries = _unit(cards[picks] @ rotation.T + 0.05 * rng.normal(size=(prompts, DIMS))).astype(np.float32)
    table = CardVectors(np.arange(1, adapters + 1), cards[None], np.ones((1, adapters), bool), np.ones(adapters, bool))
    examples = [Example(q, (int(p) + 1,), (f"civitai:{int(p) + 1}",), "civitai") for q, p in zip(queries, picks)]
    return table, examples


def _recall_at_1(query_map: np.ndarray, table: CardVectors, examples: list[Example]) -> float:
    mapped = _unit(np.stack([e.vector for e in examples]) @ query_map)
    best = (mapped @ table.vectors[0].T).argmax(1)
    return float(np.mean([table.ids[b] == e.picked[0] for b, e in zip(best, examples)]))


def test_the_query_map_learns_what_people_pick_and_generalises() -> None:
    table, examples = _world()
    train, test = examples[:200], examples[200:]
    settings = MapSettings(steps=150, learning_rate=2e-2, penalty=1e-4, random_negatives=32, hard_negatives=8)
    query_map = train_query_map(train, table, settings)
    assert query_map.shape == (DIMS, DIMS)
    before, after = _recall_at_1(np.eye(DIMS), table, test), _recall_at_1(query_map, table, test)
    assert before < 0.3 and after > 0.8, (before, after)  # on prompts it never saw


def test_nothing_to_learn_from_gives_the_identity() -> None:
    table, examples = _world()
    unknown = [Example(e.vector, (10**6,), ("civitai:none",), "civitai") for e in examples[:5]]  # picks not in the catalog
    np.testing.assert_array_equal(train_query_map(unknown, table, MapSettings()), np.eye(DIMS))


def test_neighbour_picks_are_what_the_most_similar_prompts_picked() -> None:
    counts = SourceCounts()
    for vector, picked in (([1, 0, 0], ("a",)), ([0.9, 0.1, 0], ("a", "b")), ([0, 1, 0], ("c",)), ([0, 0, 1], ("d",))):
        counts.add(picked, np.asarray(vector, np.float32))
    lists = LearnedLists(np.eye(3, dtype=np.float32), counts, neighbour_count=2)
    picks = lists.neighbour_picks(np.asarray([1, 0.05, 0], np.float32))
    assert [key for key, _ in picks] == ["a", "b"]  # "c" and "d" are not among the 2 nearest prompts
    assert picks[0][1] == pytest.approx(picks[1][1] + 0.998, abs=2e-2)  # a: both neighbours' cosines


def test_artifact_round_trip_and_checks(tmp_path: Path) -> None:
    table, examples = _world()
    lists = train_lists(examples[:50], table, MapSettings(steps=5, random_negatives=16, hard_negatives=4, neighbours=7,
                                                          adapted_weight=0.5))
    lists.save(tmp_path)
    digest = lists.meta["map_sha256"]
    lists.save(tmp_path)  # saved again (training does, with held-out metrics): the same map, the same digest
    loaded = load_from(tmp_path)
    assert loaded.meta["map_sha256"] == digest
    query = examples[60].vector
    np.testing.assert_array_equal(loaded.adapt(query), lists.adapt(query))
    assert loaded.neighbour_picks(query) == lists.neighbour_picks(query)
    assert (loaded.neighbour_count, loaded.weights["adapted"], loaded.kind) == (7, 0.5, "full+refined")
    assert loaded.meta["prompts"] == 50 and loaded.meta["settings"]["steps"] == 5

    other = train_lists(examples[:40], table, MapSettings(steps=5, random_negatives=16, hard_negatives=4))
    other.save(tmp_path / "other")
    (tmp_path / "other" / META_FILE).replace(tmp_path / META_FILE)  # metadata of another training run
    with pytest.raises(FirstStageError, match="not the one"):
        load_from(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "format": "loracle-ranker"}))
    with pytest.raises(FirstStageError, match="not a loracle-first-stage"):
        load_from(tmp_path)
    with pytest.raises(FirstStageError, match="run `loracle rank train`"):
        load_from(tmp_path / "nowhere")
    with pytest.raises(FirstStageError, match="takes 16 dims"):
        lists.adapt(np.ones(384, np.float32))


def test_neighbours_count_every_prompt_and_keep_only_those_that_picked() -> None:
    _, examples = _world(prompts=10)
    counts = neighbours_of([*examples, Example(examples[0].vector, (), (), "dev")])
    assert counts.queries == 11 and len(counts.picked) == 10
