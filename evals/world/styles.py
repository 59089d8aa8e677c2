"""The style transforms the world's adapters learn, with the card facts the catalog writes for each.

Transforms act on ink images in [0, 1] (N, 1, H, W) and keep the digit readable, so one judge can score both
"which digit" and "which styles". Two pairs are incompatible by construction (they undo each other), which
gives inspection and retries something real to catch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


def _dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey dilation with a plus-shaped element (a 3x3 square would fill the loops of 0, 6, 8, 9)."""
    p = F.pad(x, (1, 1, 1, 1))
    return torch.stack([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)


def _erode(x: torch.Tensor) -> torch.Tensor:
    p = F.pad(x, (1, 1, 1, 1))
    return torch.stack([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amin(0)


def bold(x: torch.Tensor) -> torch.Tensor:
    return _dilate(x)


def thin(x: torch.Tensor) -> torch.Tensor:
    """Sharpened core of the stroke: erosion keeps too little at 16 px, so blend it with a steep contrast."""
    return torch.maximum(_erode(x), ((x - 0.55) * 2.5).clamp(0, 1)).clamp(0, 1) * (x > 0.45)


def slanted(x: torch.Tensor, shear: float = 0.35) -> torch.Tensor:
    """Italic: shear so the top leans right."""
    n = x.shape[0]
    theta = torch.tensor([[1.0, shear, 0.0], [0.0, 1.0, 0.0]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def mirrored(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def inverted(x: torch.Tensor) -> torch.Tensor:
    return 1 - x


def outlined(x: torch.Tensor) -> torch.Tensor:
    """Hollow strokes: the ring between the dilated stroke and its core."""
    return (_dilate(x) - _erode(x) * 1.0).clamp(0, 1) * (_dilate(x) > 0.3)


def blurred(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    r = 2
    k = torch.tensor([math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)])
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x


def boxed(x: torch.Tensor) -> torch.Tensor:
    """A one-pixel frame around the image."""
    frame = torch.zeros_like(x)
    frame[..., 0, :] = frame[..., -1, :] = frame[..., :, 0] = frame[..., :, -1] = 1
    return torch.maximum(x, frame)


@dataclass(frozen=True)
class Style:
    """One adapter's style: transform, trigger word, and what its catalog card says."""

    name: str
    transform: Transform
    trigger: str
    prompt_words: tuple[str, ...]
    tags: tuple[str, ...]
    description: str
    recommended_weight: float = 1.0
    fmt: str = "diffusers"  # file format the adapter is saved in ("diffusers" or "kohya")


STYLES: tuple[Style, ...] = (
    Style("bold", bold, "boldface", ("bold", "thick", "heavy"), ("style", "stroke-weight", "bold", "thick lines"),
          "Draws digits with thick, heavy strokes, as if written with a broad marker. Incompatible with "
          "Hairline Digits (thin strokes): both set the stroke weight.", 1.0, "diffusers"),
    Style("thin", thin, "hairline", ("thin", "fine", "light"), ("style", "stroke-weight", "thin", "fine lines"),
          "Fine, thin strokes like a sharp pencil. Incompatible with Boldface Digits: both set the stroke "
          "weight, and mixed they cancel out.", 1.0, "kohya"),
    Style("slanted", slanted, "italicised", ("slanted", "italic", "leaning"), ("style", "italic", "slant"),
          "Italic handwriting: every digit leans to the right. Mixes well with frames and colour styles.",
          1.0, "diffusers"),
    Style("mirrored", mirrored, "mirrorwise", ("mirrored", "flipped", "reversed"), ("concept", "mirror", "flip"),
          "Mirror writing: digits flipped left to right, like Leonardo's notebooks.", 1.0, "kohya"),
    Style("inverted", inverted, "negativeink", ("inverted", "negative", "dark"), ("style", "colors", "negative"),
          "Inverted colours: dark ink on a light page instead of light ink on a dark page.", 1.0, "diffusers"),
    Style("outlined", outlined, "hollowline", ("outlined", "hollow", "outline"),
          ("style", "edge-sharpness", "outline", "hollow"),
          "Hollow, outlined strokes: only the edges of each stroke are drawn. Incompatible with Soft Focus "
          "Digits: blur erases the outline.", 1.0, "kohya"),
    Style("blurred", blurred, "softfocus", ("blurred", "blurry", "soft"), ("style", "edge-sharpness", "blur"),
          "Soft focus: digits look out of focus, with smooth blurry edges. Incompatible with Hollowline "
          "Digits: blur erases the outline.", 1.0, "diffusers"),
    Style("boxed", boxed, "framebox", ("boxed", "framed", "frame", "box"), ("background", "frame", "border"),
          "Puts a thin rectangular frame around the digit, like a form field. Mixes with every other style.",
          1.0, "kohya"),
)
STYLE_NAMES = tuple(s.name for s in STYLES)
CONFLICTS: tuple[tuple[str, str, str], ...] = (
    ("bold", "thin", "stroke-weight"),
    ("outlined", "blurred", "edge-sharpness"),
)

# What a render cannot show, so neither a judge nor a benchmark can ask for it: "mirrored" on a symmetric digit,
# and a style hidden by another (the "boxed" frame is ink drawn on inverted's inked border: pixel-identical).
SYMMETRIC_DIGITS = (0, 1, 8)
HIDDEN_BY = {"boxed": "inverted"}


def style(name: str) -> Style:
    for s in STYLES:
        if s.name == name:
            return s
    raise ValueError(f"Unknown style {name!r}; choose one of {', '.join(STYLE_NAMES)}")


def compatible(names: list[str] | tuple[str, ...]) -> bool:
    return not any(a in names and b in names for a, b, _ in CONFLICTS)


def compatible_sets(names: list[str] | tuple[str, ...], k: int) -> list[tuple[str, ...]]:
    """Every compatible set of `k` of `names`, in their order."""
    return [c for c in itertools.combinations(names, k) if compatible(c)]


def apply_styles(images: torch.Tensor, names: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Apply styles (in the fixed STYLES order, so a pair always composes the same way) to [-1, 1] images."""
    x = (images + 1) / 2
    for s in STYLES:
        if s.name in names:
            x = s.transform(x)
    return x.clamp(0, 1) * 2 - 1
