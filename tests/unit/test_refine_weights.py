"""Weight extraction from card text and example prompts (tools/refine/weights.py)."""

from __future__ import annotations

import pytest

from loracle.tools.refine.weights import DEFAULT_WEIGHT, card_weight, example_weight, lora_tags, recommend_weight


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Recommended weight: 0.6-0.8", 0.7),
        ("LoRA weight suggestion:0.4~1", 0.7),
        ("Use at weight 1, might need hires fix", 1.0),
        ("Works well on 0.9 weight", 0.9),
        ("a strength of 0.75 works good", 0.75),
        ("weight between 0.7 to 0.9", 0.8),
        ("Weight 1.0-1.4", 1.2),
        ("推荐的Lora权重为0.5~0.7", 0.6),
        ("Denoising strength 0.5, CFG scale 7. Suggested weight 0.65", 0.65),
    ],
)
def test_card_weights_and_ranges(text: str, expected: float) -> None:
    guess = card_weight(text)
    assert guess is not None and guess.source == "card"
    assert guess.weight == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "Stable for most models up to ±1.5(max 2.0), beyond that there may be issues",
        "You can push the weight up to 2",
        "Denoising strength 0.45, CFG scale 7, clip skip 2",
        "ADetailer strength 0.4",
        "Made for Stable Diffusion 1.5",
        "(red:1.2) hair, (green:1.1) eyes",
        "You can adjust the weight -1 to 1 to add or remove detail",
        "",
    ],
)
def test_limits_and_other_knobs_are_not_recommendations(text: str) -> None:
    assert card_weight(text) is None


def test_up_to_2_does_not_override_the_default() -> None:
    guess = recommend_weight("Strong effect, weight can go up to 2.", [], ["thing.safetensors"])
    assert (guess.weight, guess.source) == (DEFAULT_WEIGHT, "default")


def test_lora_tags_are_parsed_with_optional_block_weights() -> None:
    prompt = "a cat <lora:catStyle_v2:0.65>, <LyCORIS:x:1>, <lyco:other-net:1.2:0.5>, <lora:bad:high>"
    assert lora_tags(prompt) == [("catStyle_v2", 0.65), ("other-net", 1.2)]


def test_example_prompts_override_the_card_and_other_adapters_are_ignored() -> None:
    prompts = [
        "a woman in burberry plaid <lora:burberry_v0.6:0.9>, <lora:koreanDoll_v20:0.4>",
        "coat <lora:burberry_v0.6:0.9>",
        "scarf, <lora:koreanDoll_v20:0.4> <lora:burberry_v0.6:1>",
    ]
    guess = recommend_weight("Recommended weight 0.6", prompts, ["burberry_v0.6.safetensors", "Burberry plaid"])
    assert (guess.weight, guess.source) == (0.9, "examples")


def test_a_single_unknown_tag_names_the_adapter_in_mixed_prompts() -> None:
    prompts = ["<lora:baoxiang:0.5> chest", "<lora:baoxiang:0.4>, <lora:other:1>", "<lora:baoxiang:0.5>"]
    guess = example_weight(prompts, ["GameIconResearch_chest2_Lora.safetensors"])
    assert guess is not None and guess.weight == 0.5


def test_card_sample_prompt_is_a_last_resort() -> None:
    guess = recommend_weight("Example prompt: <lora:Battleworn-09:1> broken armor", [], ["Battleworn-09.safetensors"])
    assert (guess.weight, guess.source) == (1.0, "card")
    stated = recommend_weight("LoRA weight: 0.3 - 0.5 prompt: <lora:slskmz_v2:0.3>, sailor", [], ["slskmz_v2.safetensors"])
    assert stated.weight == pytest.approx(0.4)
