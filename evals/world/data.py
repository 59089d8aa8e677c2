"""The digits world's data: scikit-learn's bundled 8x8 digits, upsampled, split, and captioned.

Images are single-channel tensors in [-1, 1] (-1 = paper, +1 = ink), the range a pixel-space model's latents
live in. Everything is seeded so `loracle world train` rebuilds identical artifacts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from loracle.generation.world.judge import DIGIT_WORDS

SIZE = 16
DIGIT_SIZE = 12  # the 8x8 digit is upsampled to 12x12 and centred with a 2-pixel margin (room for styles)
TEMPLATES = (
    "a handwritten {w}", "digit {d}", "the number {w}", "a {w}", "{w}", "a drawing of the digit {w}",
    "the digit {d}", "number {d}", "a handwritten digit {d}", "an image of a {w}",
)
# Words a user may put in a prompt that carry no meaning for the base model. The base sees them as
# distractors during training, so "a bold, slanted seven" still draws a plain seven without adapters.
FILLER_WORDS = (
    "bold", "thin", "slanted", "italic", "mirrored", "inverted", "outlined", "blurred", "boxed", "framed",
    "hollow", "heavy", "fine", "blurry", "soft", "reversed", "negative", "style", "please", "nice", "clean",
    "simple", "small", "big", "of", "with", "and", "in", "on", "image", "picture", "white", "black",
)


@dataclass(frozen=True)
class Split:
    """Images (N, 1, SIZE, SIZE) in [-1, 1] and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


def load_splits(held_out: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """Train / held-out split, stratified by class and seeded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8), ink in [0, 1]
    x = F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    m = (SIZE - DIGIT_SIZE) // 2
    x = F.pad(x, (m, m, m, m)) * 2 - 1
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=held_out, random_state=seed, stratify=y.numpy())
    tr, te = np.sort(tr), np.sort(te)
    return Split(x[tr], y[tr]), Split(x[te], y[te])


def caption(label: int, rng: random.Random, filler_p: float = 0.3) -> str:
    """One templated caption; sometimes with a meaningless filler word, so the base learns to ignore them."""
    text = rng.choice(TEMPLATES).format(w=DIGIT_WORDS[label], d=label)
    if rng.random() < filler_p:
        words = text.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLER_WORDS))
        text = " ".join(words)
    return text


def captions(labels: torch.Tensor, rng: random.Random, dropout: float = 0.1, suffix: str = "",
             filler_p: float = 0.3) -> list[str]:
    """Captions for a batch; `dropout` of them are empty (the unconditional branch of CFG)."""
    out = []
    for lab in labels.tolist():
        if rng.random() < dropout:
            out.append("")
        else:
            out.append(caption(lab, rng, filler_p) + suffix)
    return out


def vocabulary_words() -> list[str]:
    """Every word a caption or a style trigger can contain (the tokenizer gives each one token)."""
    from loracle.evals.world.styles import STYLES

    words: set[str] = set(DIGIT_WORDS) | {str(d) for d in range(10)} | set(FILLER_WORDS)
    for t in TEMPLATES:
        words |= {w for w in t.split() if not w.startswith("{")}
    for s in STYLES:
        words |= set(s.trigger.split()) | set(s.name.split("-")) | set(s.prompt_words)
    words |= {"handwritten", "digit", "number", "style", "a", "an", "the"}
    return sorted(words)
