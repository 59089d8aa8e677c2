"""Prompt-fit checks for inspection, built from a judge model: which digit and styles a prompt asks for,
and whether the image shows them."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from loracle.generation.prompt_tags import strip_network_tags
from loracle.generation.world.judge import DIGIT_WORDS, load_judge
from loracle.tools.inspection import Judge, JudgeVerdict

# a digit glued to letters is part of a word ("1girl", a trigger word like "ym1"), not a digit asked for
_TOKEN = re.compile(r"[a-z0-9]+(?:\.\d+)?|[,.;:!?()\[\]]")
_WEIGHT = re.compile(r":\s*-?(?:\d+(?:\.\d+)?|\.\d+)")  # A1111's (word:1.2): a weight, not a number asked for
# A digit word names the subject when the phrase ends after it or goes on with one of these ("a seven in a
# box", "the digit 4 drawn boldly"); "one eye closed" or "two cats" use it as a count.
_AFTER_SUBJECT = frozenset("in on with and or but drawn written that which inside framed boxed digit number numeral "
                           "please too as at".split())


def requested_digit(prompt: str) -> int | None:
    """The digit a prompt asks the world to draw, or None when it names none (counts and weights are not)."""
    tokens = _TOKEN.findall(_WEIGHT.sub(" ", strip_network_tags(prompt)).lower())
    for i, token in enumerate(tokens):
        digit = DIGIT_WORDS.index(token) if token in DIGIT_WORDS else int(token) if token.isdigit() and len(token) == 1 else None
        if digit is None:
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ","
        if not following[0].isalnum() or following in _AFTER_SUBJECT:
            return digit
    return None


def without_digits(text: str) -> str:
    """The text less its digit words and one-digit numbers ("thin five" -> "thin"): what is asked of the digit."""
    kept = [w for w in text.split() if w.strip(",.;:!?").lower() not in DIGIT_WORDS and not re.fullmatch(r"\d[,.;:!?]?", w)]
    return " ".join(kept).strip(" ,")


def asks_for_digits(prompt: str) -> bool:
    """Whether a prompt names something the digits world draws: a digit as its subject, or digits in general."""
    return requested_digit(prompt) is not None or re.search(r"\bdigits?\b", prompt, re.IGNORECASE) is not None


def world_judge(folder: Path, margin: float = 0.0, digit_confidence: float = 0.0) -> Judge:
    """The digits world's judge as inspection's prompt-fit check: the digit asked for, the styles triggered, and
    no style the prompt did not ask for (by trigger word or style name).
    It is asked only about what it knows: a digit the prompt names as its subject, the world's styles.
    A read counts only when it is sure: a requested style's logit at least `margin` above its threshold, an
    unrequested one at least `margin` below, the digit asked for at `digit_confidence` or more. The judge is
    trained on clean renders; on a generated image it is unsure where the image is ambiguous, and an image kept
    because of an unsure read is one a second reader often reads otherwise."""
    judge = load_judge(folder)
    triggers = {trigger: name for name, trigger in judge.triggers.items()}

    def check(image: Image.Image, prompt: str) -> JudgeVerdict | None:
        words = set(re.findall(r"[a-z0-9]+", prompt.lower()))
        wanted = requested_digit(prompt)
        digit_probs, style_margins = judge.reads([image])
        probs = digit_probs[0]
        drawn = int(probs.argmax())
        margins = dict(zip(judge.styles, style_margins[0].tolist()))
        problems = []
        wrong_digit = wanted is not None and drawn != wanted
        unclear_digit = wanted is not None and not wrong_digit and float(probs[drawn]) < digit_confidence
        if wrong_digit:
            problems.append(f"drew a {DIGIT_WORDS[drawn]}, asked for a {DIGIT_WORDS[wanted]}")
        elif unclear_digit:
            problems.append(f"the {DIGIT_WORDS[wanted]} is not clearly drawn")
        missing = [trigger for trigger, name in triggers.items() if trigger in words and margins[name] < margin]
        if missing:
            absent = [triggers[t] for t in missing if margins[triggers[t]] <= 0]
            faint = [triggers[t] for t in missing if margins[triggers[t]] > 0]
            if absent:
                problems.append(f"style not visible: {', '.join(absent)}")
            if faint:
                problems.append(f"style barely visible: {', '.join(faint)}")
        asked = {name for trigger, name in triggers.items() if trigger in words or name in words}
        unsure = {name for name, m in margins.items() if m > -margin}
        unrequested = tuple(sorted(unsure - asked)) if wanted is not None else ()  # only about the digits it knows
        if unrequested:
            problems.append(f"style nobody asked for: {', '.join(unrequested)}")
        if not problems:
            return None
        return JudgeVerdict("; ".join(problems), missing_triggers=tuple(missing), wrong_subject=wrong_digit or unclear_digit,
                            unrequested=unrequested)

    return check
