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


def asks_for_digits(prompt: str) -> bool:
    """Whether a prompt names something the digits world draws: a digit as its subject, or digits in general."""
    return requested_digit(prompt) is not None or re.search(r"\bdigits?\b", prompt, re.IGNORECASE) is not None


def world_judge(folder: Path) -> Judge:
    """The digits world's judge as inspection's prompt-fit check: the digit asked for, the styles triggered, and
    no style the prompt did not ask for (by trigger word or style name).
    It is asked only about what it knows: a digit the prompt names as its subject, the world's styles."""
    judge = load_judge(folder)
    triggers = {trigger: name for name, trigger in judge.triggers.items()}

    def check(image: Image.Image, prompt: str) -> JudgeVerdict | None:
        words = set(re.findall(r"[a-z0-9]+", prompt.lower()))
        wanted = requested_digit(prompt)
        drawn = int(judge.digits([image])[0])
        problems = []
        wrong_digit = wanted is not None and drawn != wanted
        if wrong_digit:
            problems.append(f"drew a {DIGIT_WORDS[drawn]}, asked for a {DIGIT_WORDS[wanted]}")
        seen = judge.detect([image])[0]
        missing = [trigger for trigger, name in triggers.items() if trigger in words and name not in seen]
        if missing:
            problems.append(f"style not visible: {', '.join(triggers[t] for t in missing)}")
        asked = {name for trigger, name in triggers.items() if trigger in words or name in words}
        unrequested = tuple(sorted(seen - asked)) if wanted is not None else ()  # only about the digits it knows
        if unrequested:
            problems.append(f"style nobody asked for: {', '.join(unrequested)}")
        if not problems:
            return None
        return JudgeVerdict("; ".join(problems), missing_triggers=tuple(missing), wrong_subject=wrong_digit,
                            unrequested=unrequested)

    return check
