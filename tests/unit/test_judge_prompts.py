"""The world judge is asked only about what it knows: the digit a prompt names as its subject."""

from __future__ import annotations

import pytest

from loracle.agent.runtime import DIGITS
from loracle.tools.judges import requested_digit


@pytest.mark.parametrize(("prompt", "digit"), [
    ("a bold, slanted seven", 7),
    ("a seven in a box", 7),
    ("a bold seven, boldface, italicised", 7),
    ("the digit 4 drawn boldly", 4),
    ("a five <lora:digits_boxed_kohya:1>", 5),
    ("one eye closed, smiling", None),  # a count, not the digit 1
    ("portrait, (masterpiece:0.75), blue eyes <lora:baroqueAI:0.8>", None),  # weights are not "asked for a zero"
    ("two cats on a sofa", None),
    ("a watercolor fox", None),
    ("1 girl, solo, long hair", None),  # counts in real prompts (Civitai): no digit asked for
    ("masterpiece, highres, ym1, blue sailor collar", None),  # a trigger word ending in a digit
    ("portrait, (anjelika:.8), smile", None),  # a weight written without its leading zero
])
def test_requested_digit(prompt: str, digit: int | None) -> None:
    assert requested_digit(prompt) == digit


@pytest.mark.parametrize(("prompt", "covered"), [
    ("a bold, slanted seven", True),
    ("a bold digit", True),
    ("1 girl, solo, two legs up, one side up", False),
    ("tarot card, roman numeral, digital painting", False),
])
def test_the_answer_reads_a_prompt_as_the_judge_does(prompt: str, covered: bool) -> None:
    """The digits world's "draws digits only" note and "drawn by the base model itself" use the judge's reading."""
    assert DIGITS.covers(prompt) is covered
