"""The learned reranker without a database: artifact round-trip, exact scoring, sane features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from loracle.evals.rank_train import Candidates, attach_prior, fit_lightgbm, is_heldout
from loracle.tools.learned_lists import MAP_FILE, META_FILE, load_from
from loracle.tools.learned_rank import (
    DEFAULT_PATH,
    ArtifactError,
    LightGBMModel,
    Ranker,
    load_ranker,
    rerank_learned,
    save_artifact,
    unfiltered_path,
)
from loracle.tools.pick_prior import PickPrior
from loracle.tools.rank_features import FEATURE_VERSION, FEATURES, INDEX, MISSING_RANK, PRIOR_COLUMNS, build_features, card_info

EMPTY_PRIOR = PickPrior.count([]).to_json()


def _artifact(model: dict) -> dict:
    return {"format": "loracle-ranker", "version": 1, "feature_version": FEATURE_VERSION, "features": list(FEATURES),
            "model": model, "prior": EMPTY_PRIOR, "selection": None}


def _data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    logit = 2 * x[:, 0] - 1.5 * x[:, 5] + x[:, 10] * x[:, 11]
    return x, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def test_lightgbm_artifact_round_trip_scores_exactly_like_the_booster(tmp_path: Path) -> None:
    x, y = _data()
    x[::11, 3] = np.nan  # missing values follow each split's default branch, in training and after loading
    booster = fit_lightgbm(x, y, rounds=40)
    path = tmp_path / "ranker.json"
    save_artifact(_artifact(LightGBMModel.to_json(booster)), path)
    ranker = load_ranker(path)
    test, _ = _data(500, seed=1)
    test[::7, 3] = np.nan
    np.testing.assert_allclose(ranker.raw(test), booster.predict(test, raw_score=True), atol=1e-9)
    np.testing.assert_allclose(ranker.score(test), booster.predict(test), atol=1e-9)
    artifact = json.loads(path.read_text())
    assert artifact["model"]["type"] == "lightgbm" and artifact["model"]["text"].startswith("tree")


def test_a_model_over_another_feature_count_is_refused() -> None:
    x, y = _data()
    with pytest.raises(ArtifactError, match="features"):
        Ranker(_artifact(LightGBMModel.to_json(fit_lightgbm(x[:, :5], y, rounds=3))))
    with pytest.raises(ArtifactError, match="does not load"):
        Ranker(_artifact({"type": "lightgbm", "text": "not a model"}))


def test_logistic_artifact_scores() -> None:
    coef = np.zeros(len(FEATURES))
    coef[2] = 2.0
    ranker = Ranker(_artifact({"type": "logistic", "mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
                               "coef": coef.tolist(), "intercept": -1.0}))
    x = np.zeros((2, len(FEATURES)), dtype=np.float32)
    x[1, 2] = 1.0
    np.testing.assert_allclose(ranker.score(x), [1 / (1 + math.e), 1 / (1 + math.exp(-1))], rtol=1e-6)


def test_artifact_with_another_feature_list_is_refused() -> None:
    artifact = _artifact({"type": "logistic", "mean": [0.0], "scale": [1.0], "coef": [1.0], "intercept": 0.0})
    artifact["features"] = ["cos_head"]
    with pytest.raises(ArtifactError):
        Ranker(artifact)
    artifact = _artifact({"type": "logistic", "mean": [0.0], "scale": [1.0], "coef": [1.0], "intercept": 0.0})
    del artifact["prior"]
    with pytest.raises(ArtifactError, match="pick prior"):
        Ranker(artifact)


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_pick_prior_counts_per_source_and_survives_json() -> None:
    queries = [("dev", ["a", "b", "c"], ["a"], _unit(1, 0, 0)), ("dev", ["a", "b"], ["a", "b"], _unit(0.6, 0.8, 0)),
               ("civitai", ["a", "c"], ["c"], _unit(0, 0, 1))]
    prior = PickPrior.count(queries, alpha=1.0)
    again = PickPrior.from_json(json.loads(json.dumps(prior.to_json())))
    query = _unit(1, 0, 0)
    x = again.features(["a", "b", "c", "unknown"], query)
    rate = lambda picks, queries: math.log1p(picks * 1000 / queries)  # noqa: E731
    # per source: rate, share, votes (summed cosine of the neighbours that picked it), nearest, centroid
    a_centroid = float(_unit(1.6, 0.8, 0) @ query)
    np.testing.assert_allclose(x[0], [rate(2, 2), 2 / 3, 1.6, 1.0, a_centroid, 0, 0, 0, 0, 0], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(x[1], [rate(1, 2), 1 / 3, 0.6, 0.6, 0.6, 0, 0, 0, 0, 0], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(x[2], [0, 0, 0, 0, 0, rate(1, 1), 1 / 2, 0, 0, 0], rtol=1e-2, atol=1e-2)  # orthogonal
    assert not x[3].any()
    # int8 vectors in training as in the artifact: the round trip scores exactly what training scored
    assert np.array_equal(x, prior.features(["a", "b", "c", "unknown"], query))
    assert x[0, INDEX["prior_dev_votes"] - PRIOR_COLUMNS.start] > x[0, INDEX["prior_dev_nearest"] - PRIOR_COLUMNS.start]


def test_pick_prior_neighbours_follow_the_query() -> None:
    # two kinds of training prompts picking two adapters: the nearer kind's adapter gets the votes
    queries = [("civitai", ["fox", "neon"], ["fox"], _unit(1, 0.1 * i, 0)) for i in range(5)]
    queries += [("civitai", ["fox", "neon"], ["neon"], _unit(0, 0.1 * i, 1)) for i in range(5)]
    prior = PickPrior.count(queries)
    votes = INDEX["prior_civitai_votes"] - PRIOR_COLUMNS.start
    centroid = INDEX["prior_civitai_centroid"] - PRIOR_COLUMNS.start
    near_fox = prior.features(["fox", "neon"], _unit(1, 0, 0.1))
    near_neon = prior.features(["fox", "neon"], _unit(0.1, 0, 1))
    assert near_fox[0, votes] > near_fox[1, votes] and near_neon[1, votes] > near_neon[0, votes]
    assert near_fox[0, centroid] > 0.9 > 0.2 > near_fox[1, centroid]
    # the overall counts do not depend on the query
    rate = INDEX["prior_civitai_rate"] - PRIOR_COLUMNS.start
    assert near_fox[0, rate] == near_neon[0, rate] == near_fox[1, rate]


def _candidates(query_id: str, keys: list[str], picked: list[str]) -> Candidates:
    ids = list(range(len(keys)))
    c = Candidates(query_id, "", _unit(1, 1, 0), ids, [{}] * len(ids), [0.0] * len(ids), {keys.index(k) for k in picked})
    c.features, c.keys, c.picked_keys = np.zeros((len(ids), len(FEATURES)), np.float32), keys, picked
    return c


def test_training_prior_is_out_of_fold() -> None:
    # every training query picks its own adapter, which no other query picks; "shared" is picked by all
    train = [_candidates(f"coco-{i}", [f"own-{i}", "shared"], [f"own-{i}", "shared"]) for i in range(40)]
    held = [_candidates("coco-held", ["own-0", "shared"], [])]
    serving, _ = attach_prior(train, held)
    for c in train:
        own, shared = c.features[:, PRIOR_COLUMNS][:, :2]  # dev rate and share
        assert not own.any(), "a query's own label leaked into its prior"
        assert shared.all() and shared[1] < 1  # picked by the other folds' queries
        assert not c.features[0, PRIOR_COLUMNS].any()  # nor into the neighbour features (votes, nearest, centroid)
    held_own = held[0].features[0, PRIOR_COLUMNS]
    assert held_own[:5].all() and np.array_equal(held[0].features[:, PRIOR_COLUMNS], serving.features(["own-0", "shared"], held[0].vector))


def test_the_committed_ranker_refuses_another_embedding_model() -> None:
    class OtherEmbedder:
        name = "some-other-embedder"

    hit = type("Hit", (), {"adapter_id": 1, "score": 0.1, "evidence": {}})()
    with pytest.raises(ArtifactError, match="all-MiniLM-L6-v2 embeddings"):
        rerank_learned(None, OtherEmbedder(), "a fox", np.zeros(8, np.float32), [hit])


def _card(name, tags, triggers, downloads=100, weight=None):
    return card_info((1, f"civitai:{name}", name, tags, triggers, None, "SD 1.5", weight, downloads, 5, 4.5, 10, 2, 500))


def test_features_are_sane() -> None:
    nan = float("nan")
    cosines = {"head": np.array([0.9, 0.2]), "full": np.array([nan, 0.4]), "prompt": np.array([0.7, nan])}
    cards = {1: _card("Watercolor Style", ["style", "watercolor"], ["wtrcolor"], downloads=1000, weight=0.7),
             2: _card("Pixel Art", ["pixel art", "anime"], [])}
    text = "a wtrcolor painting of a fox, watercolor"
    x = build_features(text, [1, 2], [{"head": 1, "lexical": 4}, {"full": 2}], [0.05, 0.02], cosines, cards, [6.0, 0.0])
    assert x.shape == (2, len(FEATURES)) and x.dtype == np.float32 and np.isfinite(x).all()
    f = lambda row, name: float(x[row, INDEX[name]])  # noqa: E731
    assert (f(0, "cos_head"), f(0, "cos_full"), f(0, "cos_prompt")) == pytest.approx((0.9, 0.0, 0.7))  # NaN -> 0
    assert f(1, "cos_head_gap") == pytest.approx(-0.7) and f(0, "cos_full_gap") == pytest.approx(-0.4)
    assert f(0, "cos_max") == pytest.approx(0.9) and f(1, "cos_max") == pytest.approx(0.4)
    assert (f(0, "has_prompt_vector"), f(1, "has_prompt_vector"), f(1, "cos_prompt")) == (1.0, 0.0, 0.0)
    assert f(0, "log_rank_head") == 0.0 and f(0, "log_rank_lexical") == pytest.approx(math.log(4))
    assert f(1, "log_rank_head") == pytest.approx(math.log(MISSING_RANK)) and (f(0, "n_lists"), f(1, "n_lists")) == (2, 1)
    assert (f(0, "trigger_phrase"), f(1, "trigger_phrase")) == (1.0, 0.0)
    assert f(0, "tag_hits") == 1 and f(1, "tag_hits") == 0  # "watercolor" (the stop-word "style" is ignored)
    assert f(0, "name_cover") == 1.0 and f(1, "name_cover") == 0.0
    assert f(0, "log_downloads") == pytest.approx(math.log1p(1000)) and f(0, "has_recommended_weight") == 1.0
    assert (f(0, "group_style"), f(1, "group_style"), f(1, "group_anime")) == (1.0, 0.0, 1.0)
    assert f(0, "log_fused_pos") == 0.0 and f(1, "log_fused_pos") == pytest.approx(math.log(2))
    assert f(0, "query_commas") == 1.0
    assert (f(0, "lexical_score"), f(0, "lexical_ratio"), f(1, "lexical_ratio")) == (6.0, 1.0, 0.0)
    assert not x[:, INDEX["adapted_score"]].any()  # no adapted list given
    adapted = build_features(text, [1, 2], [{"adapted": 2, "neighbours": 1}, {}], [0.05, 0.02], cosines, cards,
                             adapted_scores=[0.0, 0.61])
    assert adapted[:, INDEX["adapted_score"]] == pytest.approx([0.0, 0.61])
    assert adapted[0, INDEX["log_rank_adapted"]] == pytest.approx(math.log(2)) and adapted[0, INDEX["log_rank_neighbours"]] == 0.0
    assert f(0, "cos_head_z") > 0 > f(1, "cos_head_z")  # the nearer head vector is above this query's mean
    assert not x[:, PRIOR_COLUMNS].any()  # no prior given
    prior = PickPrior.count([("civitai", ["civitai:Pixel Art"], ["civitai:Pixel Art"], _unit(1, 0))])
    with pytest.raises(ValueError, match="query's vector"):
        build_features(text, [1, 2], [{}, {}], [0.05, 0.02], cosines, cards, [6.0, 0.0], prior)
    with_prior = build_features(text, [1, 2], [{"head": 1, "lexical": 4}, {"full": 2}], [0.05, 0.02], cosines, cards, [6.0, 0.0],
                                prior, _unit(1, 1))
    assert not with_prior[0, PRIOR_COLUMNS].any() and with_prior[1, INDEX["prior_civitai_share"]] > 0
    assert with_prior[1, INDEX["prior_civitai_centroid"]] == pytest.approx(2 ** -0.5, abs=1e-2)


def test_heldout_split_is_fixed_and_proportionate() -> None:
    dev = [f"coco-{i}" for i in range(4000)]
    civitai = [f"civitai-image-{i}" for i in range(4000)]
    assert 0.45 < np.mean([is_heldout(i) for i in dev]) < 0.55
    assert 0.15 < np.mean([is_heldout(i) for i in civitai]) < 0.25
    assert [is_heldout(i) for i in dev[:50]] == [is_heldout(i) for i in dev[:50]]


@pytest.mark.skipif(not DEFAULT_PATH.exists(), reason="no committed artifact")
@pytest.mark.parametrize("path", [DEFAULT_PATH, unfiltered_path(DEFAULT_PATH)], ids=["filtered", "unfiltered"])
def test_committed_artifacts_load_and_are_calibrated(path: Path) -> None:
    ranker = load_ranker(path)
    assert ranker.meta["features"] == list(FEATURES)
    assert path.stat().st_size < 2_000_000
    assert ranker.meta["training"]["exclude_tags"] == ([] if "unfiltered" in path.name else ["character", "celebrity"])
    selection = ranker.selection
    assert 1.7 <= selection["mean_picks"] <= 2.7 and selection["settings"]["max_per_task"] <= 3
    x = np.zeros((3, len(FEATURES)), dtype=np.float32)
    x[1, INDEX["cos_max"]] = x[1, INDEX["cos_head"]] = 0.8
    scores = ranker.score(x)
    assert ((scores > 0) & (scores < 1)).all()
    # trained on the committed first stage, whose files are small and were written together
    first_stage = load_from(DEFAULT_PATH.parent)
    assert ranker.first_stage == first_stage.meta["map_sha256"]
    assert sum((DEFAULT_PATH.parent / name).stat().st_size for name in (MAP_FILE, META_FILE)) < 3_000_000
