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


def _render(digit: int, styles: tuple[str, ...]):
    """A held-out digit rendered with `styles`, as a PNG-like image the judge reads."""
    from PIL import Image

    from loracle.evals.world.data import load_splits
    from loracle.evals.world.styles import apply_styles

    _, held_out = load_splits()
    x = apply_styles(held_out.images[(held_out.labels == digit).nonzero()[0]], styles)
    return Image.fromarray(((x[0, 0] + 1) * 127.5).round().byte().numpy(), mode="L")


def test_inspection_accepts_only_sure_reads() -> None:
    """A read inside the margin counts as not seen (a requested style "barely visible", an unrequested one present),
    a digit below the confidence as not clearly drawn; at the defaults the clean render passes."""
    from loracle.generation.world import world_paths
    from loracle.generation.world.judge import load_judge
    from loracle.tools.judges import world_judge

    folder = world_paths().judge
    judge = load_judge(folder)
    image = _render(7, ("bold",))
    margins = dict(zip(judge.styles, judge.reads([image])[1][0].tolist()))
    prompt = "a bold seven, boldface"
    assert world_judge(folder)(image, prompt) is None
    faint = world_judge(folder, margin=margins["bold"] + 0.1)(image, prompt)
    assert faint is not None and "style barely visible: bold" in faint.message and faint.missing_triggers == ("boldface",)
    closest = max((m, s) for s, m in margins.items() if s != "bold")
    unsure = world_judge(folder, margin=-closest[0] + 0.1)(image, prompt)
    assert unsure is not None and closest[1] in unsure.unrequested
    from PIL import Image

    from loracle.generation.world.judge import DIGIT_WORDS

    blend = Image.blend(_render(7, ()), _render(1, ()), 0.6)  # a seven that could be a one
    probs = judge.reads([blend])[0][0]
    drawn, p = int(probs.argmax()), float(probs.max())
    assert p < 1
    plain = f"a {DIGIT_WORDS[drawn]}"
    sure = world_judge(folder, digit_confidence=p - (1 - p))(blend, plain)
    assert sure is None or not sure.wrong_subject
    unclear = world_judge(folder, digit_confidence=(p + 1) / 2)(blend, plain)
    assert unclear is not None and unclear.wrong_subject and f"the {DIGIT_WORDS[drawn]} is not clearly drawn" in unclear.message


@pytest.mark.parametrize(("text", "rest"), [("thin five", "thin"), ("seven", ""), ("a 7, boxed", "a boxed"),
                                            ("one eye closed", "eye closed"), ("boldface", "boldface")])
def test_what_is_asked_of_the_digit(text: str, rest: str) -> None:
    from loracle.tools.judges import without_digits

    assert without_digits(text) == rest
