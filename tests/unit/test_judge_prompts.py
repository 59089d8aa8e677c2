"""The world judge is asked only about what it knows: the digit a prompt names as its subject."""

from __future__ import annotations

import pytest

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
])
def test_requested_digit(prompt: str, digit: int | None) -> None:
    assert requested_digit(prompt) == digit
