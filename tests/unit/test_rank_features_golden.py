"""A golden feature matrix for the learned reranker: every feature of a fixed three-candidate input computed
here by hand, in plain Python, and compared with `build_features`. A trained artifact reads these columns,
so any change to what one means (a divisor, a scale, a missing-rank value, which word sets count) must show
here, not only as a quietly worse ranking."""

from __future__ import annotations

import math
from statistics import fmean, pstdev

import numpy as np
import pytest

from loracle.tools.pick_prior import PickPrior
from loracle.tools.rank_features import FEATURES, INDEX, build_features, card_info, card_keys, content_words

NAN = float("nan")
TEXT = "A wtrcolor painting of a red fox, watercolor, forest"
# the query's content words by hand: "a" and "of" are stop words
QUERY_WORDS = {"wtrcolor", "painting", "red", "fox", "watercolor", "forest"}
N = len(QUERY_WORDS)

# card rows as load_cards reads them: id, key, name, tags, trigger words, category, base model, recommended
# weight, downloads, favorites, rating, rating count, example prompts, description length
FOX = (1, "civitai:101", "Watercolor Fox Dreams", ["style", "watercolor", "red fox"], ["wtrcolor", "wc"], "Art Style",
       "SD 1.5", 0.7, 1000, 50, 4.5, 10, 7, 500)
PIXEL = (2, "civitai:202", "Pixel Forest", ["Pixel Art", "anime", "landscape"], [], None, "SDXL 1.0", None, None, None,
         None, None, None, None)
IDS = [1, 2, 3]  # 3 has no card (deleted since retrieval)


def _z(values: list[float]) -> list[float]:
    return [(v - fmean(values)) / (pstdev(values) + 1e-3) for v in values]


def _expected() -> dict[str, list[float]]:
    head, full, prompt = [0.9, 0.2, 0.5], [0.0, 0.4, 0.1], [0.7, 0.0, 0.0]  # NaN read as 0
    log = math.log
    groups = {g: [0.0, 0.0, 0.0] for g in ("style", "concept", "clothing", "character", "anime", "realistic", "woman",
                                         "background", "object", "tool")}
    groups["style"][0] = 1.0  # "style" / "art style" (the category counts as a tag)
    groups["anime"][1] = groups["background"][1] = 1.0  # "anime", "landscape"
    return {
        "cos_head": head, "cos_full": full, "cos_prompt": prompt,
        "cos_head_gap": [v - 0.9 for v in head], "cos_full_gap": [v - 0.4 for v in full],
        "cos_prompt_gap": [v - 0.7 for v in prompt],
        "cos_head_z": _z(head), "cos_full_z": _z(full), "cos_prompt_z": _z(prompt),
        "cos_max": [0.9, 0.4, 0.5],
        "has_prompt_vector": [1.0, 0.0, 0.0],
        # ranks from 1; a list that missed the adapter counts as rank 600 (what the artifacts were trained with)
        "log_rank_full": [log(600), log(2), log(600)], "log_rank_head": [0.0, log(600), log(600)],
        "log_rank_prompt": [log(600)] * 3, "log_rank_lexical": [log(4), log(600), log(600)],
        "log_rank_adapted": [log(600), log(3), log(600)], "log_rank_neighbours": [log(600), log(600), log(5)],
        "n_lists": [2.0, 2.0, 1.0],
        "rrf_score": [5.0, 3.0, 1.0],  # the fused RRF score x 100
        "log_fused_pos": [0.0, log(2), log(3)],
        "lexical_score": [6.0, 0.0, 3.0], "lexical_ratio": [1.0, 0.0, 0.5],
        "adapted_score": [0.0, 0.61, 0.0],
        # FOX: name {watercolor, fox, dreams}, triggers {wtrcolor, wc}, tag words {watercolor, red, fox}
        # PIXEL: name {pixel, forest}, no triggers, tag words {pixel, art, anime, landscape}
        "name_cover": [2 / 3, 1 / 2, 0.0],
        "query_in_name": [3 / N, 1 / N, 0.0],  # FOX: watercolor, fox and the trigger word wtrcolor
        "trigger_phrase": [1.0, 0.0, 0.0],  # "wtrcolor" in the text ("wc" is too short to count)
        "trigger_cover": [1 / 2, 0.0, 0.0],
        "tag_hits": [2.0, 0.0, 0.0],  # "watercolor" and "red fox"; "style" is only a stop word
        "query_in_tags": [3 / N, 0.0, 0.0],
        "log_downloads": [log(1001), 0.0, 0.0], "log_favorites": [log(51), 0.0, 0.0],
        "rating": [4.5, 0.0, 0.0], "log_rating_count": [log(11), 0.0, 0.0],
        "has_recommended_weight": [1.0, 0.0, 0.0], "has_trigger_words": [1.0, 0.0, 0.0],
        "n_example_prompts": [5.0, 0.0, 0.0],  # at most 5
        "log_description_chars": [log(501), 0.0, 0.0],
        "base_sd15": [1.0, 0.0, 0.0],
        **{f"group_{g}": v for g, v in groups.items()},
        "query_words": [float(N)] * 3, "query_commas": [2.0] * 3,
        # one civitai training query (vector e1) that saw FOX and PIXEL and picked PIXEL; this query is (e1+e2)/sqrt2
        **{f"prior_dev_{k}": [0.0] * 3 for k in ("rate", "share", "votes", "nearest", "centroid")},
        "prior_civitai_rate": [0.0, log(1 + 1000 / 1), 0.0],  # log1p(picks per 1000 queries)
        "prior_civitai_share": [0.0, 1 / (1 + 10), 0.0],  # picks / (appearances + alpha)
        "prior_civitai_votes": [0.0, 2 ** -0.5, 0.0],
        "prior_civitai_nearest": [0.0, 2 ** -0.5, 0.0],
        "prior_civitai_centroid": [0.0, 2 ** -0.5, 0.0],
    }


def _features() -> np.ndarray:
    cosines = {"head": np.array([0.9, 0.2, 0.5]), "full": np.array([NAN, 0.4, 0.1]), "prompt": np.array([0.7, NAN, NAN])}
    ranks = [{"head": 1, "lexical": 4}, {"full": 2, "adapted": 3}, {"neighbours": 5}]
    cards = {row[0]: card_info(row) for row in (FOX, PIXEL)}
    e1, e2 = np.eye(2, dtype=np.float32)
    prior = PickPrior.count([("civitai", ["civitai:101", "civitai:202"], ["civitai:202"], e1)], alpha=10.0)
    return build_features(TEXT, IDS, ranks, [0.05, 0.03, 0.01], cosines, cards, [6.0, 0.0, 3.0], prior,
                          (e1 + e2) / np.sqrt(2), adapted_scores=[0.0, 0.61, 0.0])


def test_query_words_are_the_content_words() -> None:
    assert content_words(TEXT) == QUERY_WORDS
    assert content_words("The Lora-style of IT, x 2b") == {"2b"}  # stop words and one-letter words out


def test_every_feature_matches_its_hand_computed_value() -> None:
    expected = _expected()
    assert set(expected) == set(FEATURES), "the golden row names every feature, no more"
    x = _features()
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    wrong = {name: (x[:, INDEX[name]].tolist(), want) for name, want in expected.items()
             if x[:, INDEX[name]].tolist() != pytest.approx(want, abs=2e-5)}
    assert not wrong, f"features differ from the golden row (got, expected): {wrong}"


def test_card_keys_name_the_prior_key_or_nothing() -> None:
    cards = {row[0]: card_info(row) for row in (FOX, PIXEL)}
    assert card_keys(IDS, cards) == ["civitai:101", "civitai:202", ""]


def test_without_lexical_scores_or_prior_their_columns_are_zero() -> None:
    cards = {row[0]: card_info(row) for row in (FOX, PIXEL)}
    cosines = {k: np.array([0.5, 0.5, 0.5]) for k in ("head", "full", "prompt")}
    x = build_features(TEXT, IDS, [{}, {}, {}], [0.0] * 3, cosines, cards)
    for name in ("lexical_score", "lexical_ratio", "adapted_score", *(f for f in FEATURES if f.startswith("prior_"))):
        assert not x[:, INDEX[name]].any(), name
    assert x[:, INDEX["cos_head_z"]].tolist() == [0.0] * 3  # equal cosines: no spread, no division by zero
    assert build_features(TEXT, [], [], [], {k: np.array([]) for k in cosines}, cards).shape == (0, len(FEATURES))


def test_one_candidate_and_the_edge_rules() -> None:
    """A single candidate; a three-letter trigger word; a tag equal to the whole query; the category counting as
    a tag for the groups; a kind no candidate has a vector of (its gap is 0, not relative to a made-up best)."""
    row = (5, "civitai:5", "Ink", ["Sx9 sumi ink"], ["sx9"], "Character", None, None, 0, 0, 0.0, 0, 0, 0)
    cosines = {"head": np.array([0.3]), "full": np.array([0.2]), "prompt": np.array([NAN])}
    x = build_features("sx9 sumi ink", [5], [{"head": 1}], [0.02], cosines, {5: card_info(row)})
    got = {name: float(x[0, INDEX[name]]) for name in ("cos_head", "trigger_phrase", "tag_hits", "group_character",
                                                        "cos_prompt_gap", "rrf_score", "query_words")}
    assert got == pytest.approx({"cos_head": 0.3, "trigger_phrase": 1.0, "tag_hits": 1.0, "group_character": 1.0,
                                 "cos_prompt_gap": 0.0, "rrf_score": 2.0, "query_words": 3.0})
