"""Prompt-fit checks for inspection, built from a judge model: which digit and styles a prompt asks for,
and whether the image shows them."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from loracle.generation.world.judge import DIGIT_WORDS, load_judge
from loracle.tools.inspection import Judge


def world_judge(folder: Path) -> Judge:
    """The digits world's judge as inspection's prompt-fit check: the digit asked for, and the styles triggered."""
    judge = load_judge(folder)
    triggers = {trigger: name for name, trigger in judge.triggers.items()}

    def check(image: Image.Image, prompt: str) -> str | None:
        words = re.findall(r"[a-z0-9]+", prompt.lower())
        wanted = [DIGIT_WORDS.index(w) if w in DIGIT_WORDS else int(w) for w in words
                  if w in DIGIT_WORDS or (w.isdigit() and len(w) == 1)]
        drawn = int(judge.digits([image])[0])
        if wanted and drawn != wanted[0]:
            return f"drew a {DIGIT_WORDS[drawn]}, asked for a {DIGIT_WORDS[wanted[0]]}"
        missing = [name for trigger, name in triggers.items() if trigger in words and name not in judge.detect([image])[0]]
        return f"style not visible: {', '.join(missing)}" if missing else None

    return check
