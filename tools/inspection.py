"""Inspection before and after sampling: checks that name the adapters they blame, so the agent can retry.

Before: adapters made for another base model, two adapters of one exclusive group (two art styles,
two characters, conflicting strokes) both at high weight, a total weight that overdrives the model,
and pairs that failed together in earlier runs. After: black, blank, NaN, saturated or noise-like
images, near-duplicates within a batch, prompt fit when a judge is configured, and after inpainting, that
the unmasked region stayed put.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from loracle.tools.compatibility import fits

EXCLUSIVE_TAGS = frozenset({"character", "celebrity", "art style", "stroke-weight", "orientation"})


@dataclass(frozen=True)
class MixAdapter:
    """What inspection needs to know about one adapter of a mix."""

    adapter_id: int
    name: str
    weight: float
    base_model: str | None = None
    tags: tuple[str, ...] = ()
    category: str | None = None


class Finding(BaseModel):
    """One problem a check found, the adapters it blames and what a retry should do about them."""

    check: str
    message: str
    blamed: list[int] = Field(default_factory=list)  # adapter ids
    action: Literal["drop", "downweight", "none"] = "drop"


@dataclass(frozen=True)
class InspectionSettings:
    max_total_weight: float = 2.4
    exclusive_min_weight: float = 0.5
    saturated_fraction: float = 0.6
    min_std: float = 0.02
    noise_ratio: float = 0.9
    duplicate_distance: float = 0.01


def check_mix(
    adapters: list[MixAdapter],
    family: str,
    settings: InspectionSettings = InspectionSettings(),
    conflicts: list[tuple[int, int, str]] = (),
) -> list[Finding]:
    """Problems with a mix before any sampling; each finding names what to drop or down-weight."""
    findings: list[Finding] = []
    for adapter in adapters:
        if not fits(family, adapter.base_model):
            findings.append(Finding(check="base_model", message=f"{adapter.name} is made for {adapter.base_model}, not a {family} base",
                                    blamed=[adapter.adapter_id]))
    groups: dict[str, list[MixAdapter]] = {}
    for adapter in adapters:
        for group in {*(t.lower() for t in adapter.tags), (adapter.category or "").lower()} & EXCLUSIVE_TAGS:
            groups.setdefault(group, []).append(adapter)
    for group, members in groups.items():
        strong = [a for a in members if a.weight >= settings.exclusive_min_weight]
        if len(strong) > 1:
            weakest = min(strong, key=lambda a: a.weight)
            names = " and ".join(a.name for a in strong)
            findings.append(Finding(check="exclusive", message=f"{names} are both '{group}' adapters at high weight",
                                    blamed=[weakest.adapter_id]))
    total = sum(abs(a.weight) for a in adapters)
    if total > settings.max_total_weight:
        findings.append(Finding(check="total_weight", message=f"total adapter weight {total:.2f} exceeds {settings.max_total_weight}",
                                blamed=[a.adapter_id for a in adapters], action="downweight"))
    ids = {a.adapter_id: a for a in adapters}
    for a, b, reason in conflicts:
        if a in ids and b in ids:
            weaker = min((ids[a], ids[b]), key=lambda x: x.weight)
            findings.append(Finding(check="known_conflict", message=f"{ids[a].name} and {ids[b].name} failed together before ({reason})",
                                    blamed=[weaker.adapter_id]))
    return findings


def image_problem(image: Image.Image, settings: InspectionSettings = InspectionSettings()) -> str | None:
    """Why an image is unusable (black, blank, NaN, saturated, noise), or None."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if not np.isfinite(pixels).all():
        return "contains NaN"
    if pixels.std() < settings.min_std:
        return "blank (a single flat colour)" if pixels.mean() > 0.05 else "black"
    clipped = np.mean((pixels <= 0.01) | (pixels >= 0.99))
    if clipped > settings.saturated_fraction and pixels.std() > 0.45:
        return f"saturated ({clipped:.0%} of pixels clipped)"
    # Noise has neighbouring pixels as different as random pairs; images have smooth regions.
    neighbour = np.abs(np.diff(pixels, axis=1)).mean() + np.abs(np.diff(pixels, axis=0)).mean()
    shuffled = np.abs(pixels.ravel() - np.random.default_rng(0).permutation(pixels.ravel())).mean() * 2
    if shuffled > 0 and neighbour / shuffled > settings.noise_ratio:
        return "noise-like (no structure)"
    return None


def near_duplicates(images: list[Image.Image], settings: InspectionSettings = InspectionSettings()) -> list[tuple[int, int]]:
    """Pairs of images in a batch that are practically identical (a collapsed mix)."""
    arrays = [np.asarray(im.convert("L").resize((32, 32)), dtype=np.float32) / 255.0 for im in images]
    return [
        (i, j)
        for i in range(len(arrays))
        for j in range(i + 1, len(arrays))
        if np.abs(arrays[i] - arrays[j]).mean() < settings.duplicate_distance
    ]


class Judge(Protocol):
    """Prompt fit: does the image show what the prompt asked? Returns None when it does, else a reason."""

    def __call__(self, image: Image.Image, prompt: str) -> str | None: ...


def blame_images(failed: list[bool], mixes: list[list[int]]) -> list[int]:
    """Adapters most associated with failed images.

    With some images passing: the adapters whose failure rate with them most exceeds the rate without,
    and only where failures outnumber passes among the images that used them: one unlucky seed out of
    four with the same mix says nothing against the mix, so dropping its adapters would only hurt.
    With every image failing there is no contrast: blame what all failing images share, else the
    adapter(s) used most often.
    """
    if not any(failed):
        return []
    adapters = {a for mix in mixes for a in mix}
    if all(failed):
        shared = set.intersection(*(set(m) for m in mixes)) if mixes else set()
        if shared:
            return sorted(shared)
        counts = {a: sum(a in m for m in mixes) for a in adapters}
        top = max(counts.values(), default=0)
        return sorted(a for a, c in counts.items() if c == top)
    scores: dict[int, float] = {}
    for adapter in adapters:
        with_it = [f for f, mix in zip(failed, mixes) if adapter in mix]
        without = [f for f, mix in zip(failed, mixes) if adapter not in mix]
        rate_with = sum(with_it) / len(with_it)
        if rate_with <= 0.5:
            continue
        scores[adapter] = rate_with - (sum(without) / len(without) if without else 0.0)
    top = max(scores.values(), default=0.0)
    return sorted(a for a, s in scores.items() if s > 0 and s >= top - 1e-9)


def kept_region_error(image: Image.Image, source: Image.Image, mask: Image.Image, feather: int = 0) -> float:
    """Mean abs pixel change (0-1 units) where the mask keeps the input: the part inpainting must not touch.
    The input and mask are brought to the output's size as the engine does; pixels the feathered mask
    touches at all are left out. NaN when nothing is kept (an all-white mask)."""
    from loracle.generation.edit import mask_to_tensor

    w, h = image.size
    mode = "L" if image.mode == "L" else "RGB"
    out = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    ref = source.convert(mode)
    ref = np.asarray(ref if ref.size == (w, h) else ref.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    keep = mask_to_tensor(mask, h, w, feather)[0, 0].numpy() <= 1e-3
    if not keep.any():
        return float("nan")
    diff = np.abs(out - ref)
    return float((diff if diff.ndim == 2 else diff.mean(axis=-1))[keep].mean())


def check_kept_region(images: list[Image.Image], source: Image.Image, mask: Image.Image, max_error: float,
                      feather: int = 0) -> list[Finding]:
    """After inpainting: a finding when an image's unmasked region moved more than `max_error`. Nothing to
    blame among the adapters (the engine keeps that region whatever the mix), so the action is none."""
    errors = [kept_region_error(im, source, mask, feather) for im in images]
    bad = [(i, e) for i, e in enumerate(errors) if e > max_error]
    if not bad:
        return []
    detail = "; ".join(f"image {i}: {e:.3f}" for i, e in bad)
    return [Finding(check="kept_region", message=f"the unmasked region changed (mean abs pixel difference over {max_error}): {detail}",
                    action="none")]


def inspect_images(
    images: list[Image.Image],
    mixes: list[list[int]],
    prompts: list[str],
    judge: Judge | Callable[[Image.Image, str], str | None] | None = None,
    settings: InspectionSettings = InspectionSettings(),
    *,
    check_duplicates: bool = True,
) -> list[Finding]:
    """Findings over a batch; a failing image's adapters are blamed by comparison with passing images.
    `check_duplicates=False` for edits, where images share the input and may rightly look alike."""
    problems: list[str | None] = []
    for image, prompt in zip(images, prompts):
        problem = image_problem(image, settings)
        if problem is None and judge is not None:
            problem = judge(image, prompt)
        problems.append(problem)
    findings: list[Finding] = []
    failed = [p is not None for p in problems]
    if any(failed):
        blamed = blame_images(failed, mixes)
        detail = "; ".join(f"image {i}: {p}" for i, p in enumerate(problems) if p)
        findings.append(Finding(check="images", message=detail, blamed=blamed, action="drop" if blamed else "none"))
    for i, j in (near_duplicates(images, settings) if check_duplicates else []):
        if mixes[i] != mixes[j]:
            continue  # the same mix with other seeds may legitimately look alike in tiny worlds
        findings.append(Finding(check="duplicates", message=f"images {i} and {j} are near-identical despite different seeds",
                                blamed=list(mixes[i]), action="downweight"))
    return findings
