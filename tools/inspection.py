"""Inspection before and after sampling: checks that name the adapters they blame, so the agent can retry.

Before: adapters made for another base model, two adapters of one exclusive group (two art styles,
two characters, conflicting strokes) both at high weight, a total weight that overdrives the model,
and pairs that failed together in earlier runs. After: black, blank, NaN, saturated or noise-like
images, near-duplicates within a batch, prompt fit when a judge is configured, and after inpainting, that
the unmasked region stayed put.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    # "suspect": draw the images again, weights kept; the blamed adapters weigh less only if they fail again
    action: Literal["drop", "downweight", "strengthen", "suspect", "resample", "none"] = "drop"
    pair: list[int] = Field(default_factory=list)  # the two adapters a conflict finding is about, when it is one
    images: list[int] = Field(default_factory=list)  # the batch's images it is about (none: about the mix)


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
            strongest = max((a for a in strong if a is not weakest), key=lambda a: a.weight)
            names = " and ".join(a.name for a in strong)
            findings.append(Finding(check="exclusive", message=f"{names} are both '{group}' adapters at high weight",
                                    blamed=[weakest.adapter_id], pair=sorted((weakest.adapter_id, strongest.adapter_id))))
    total = sum(abs(a.weight) for a in adapters)
    if round(total, 6) > settings.max_total_weight:  # three adapters at 0.8 are 2.4, not 2.4000000000000004
        findings.append(Finding(check="total_weight", message=f"total adapter weight {total:.2f} exceeds {settings.max_total_weight}",
                                blamed=[a.adapter_id for a in adapters], action="downweight"))
    ids = {a.adapter_id: a for a in adapters}
    for a, b, reason in conflicts:
        if a in ids and b in ids:
            weaker = min((ids[a], ids[b]), key=lambda x: x.weight)
            findings.append(Finding(check="known_conflict", message=f"{ids[a].name} and {ids[b].name} failed together before ({reason})",
                                    blamed=[weaker.adapter_id], pair=sorted((a, b))))
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


@dataclass(frozen=True)
class JudgeVerdict:
    """A judge's reason with its parts: the styles (by trigger word) it did not see, and whether the subject
    itself is wrong, and the styles it saw that nobody asked for. A missing style is repaired by strengthening its
    adapter, never blamed on another one; an unasked style by drawing the image again."""

    message: str
    missing_triggers: tuple[str, ...] = ()
    wrong_subject: bool = False
    unrequested: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.message


class Judge(Protocol):
    """Prompt fit: does the image show what the prompt asked? Returns None when it does, else a reason
    (plain text, or a `JudgeVerdict` that says which styles were missing)."""

    def __call__(self, image: Image.Image, prompt: str) -> str | JudgeVerdict | None: ...


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
    detail = "; ".join(f"image {i + 1}: {e:.3f}" for i, e in bad)
    return [Finding(check="kept_region", message=f"the unmasked region changed (mean abs pixel difference over {max_error}): {detail}",
                    action="none")]


def _where(flags: Sequence[object]) -> list[int]:
    return [i for i, flag in enumerate(flags) if flag]


def inspect_images(
    images: list[Image.Image],
    mixes: list[list[int]],
    prompts: list[str],
    judge: Judge | Callable[[Image.Image, str], str | JudgeVerdict | None] | None = None,
    settings: InspectionSettings = InspectionSettings(),
    *,
    check_duplicates: bool = True,
    triggers: dict[int, Sequence[str]] | None = None,
) -> list[Finding]:
    """Findings over a batch. A broken image's adapters are blamed by comparison with passing images and
    dropped; a wrong subject is drawn again (its adapters are named as suspects, not weakened: the user asked for
    those styles); a plain-text misfit down-weights them; a style the judge did not see
    strengthens the adapter whose trigger word asked for it (`triggers`: adapter id -> trigger words); an image
    that failed with no adapter to blame (a style nobody asked for, one unlucky seed) is drawn again. Each finding names its images, so a retry can
    keep the ones that passed. `check_duplicates=False` for edits, where images share the input and may rightly look alike."""
    broken: list[str | None] = [image_problem(image, settings) for image in images]
    verdicts: list[str | JudgeVerdict | None] = [
        judge(image, prompt) if problem is None and judge is not None else None
        for image, prompt, problem in zip(images, prompts, broken)]
    findings: list[Finding] = []  # messages number images from 1, as the answer and "refine image 2" do
    if any(broken):
        failed = [p is not None for p in broken]
        blamed = blame_images(failed, mixes)
        detail = "; ".join(f"image {i + 1}: {p}" for i, p in enumerate(broken) if p)
        findings.append(Finding(check="images", message=detail, blamed=blamed, action="drop" if blamed else "resample",
                                images=_where(failed)))
    missing = [v if isinstance(v, JudgeVerdict) and v.missing_triggers else None for v in verdicts]
    if any(missing):
        owners = sorted({a for v, mix in zip(missing, mixes) if v for a in mix
                         if set((triggers or {}).get(a, ())) & set(v.missing_triggers)})
        detail = "; ".join(f"image {i + 1}: {v.message}" for i, v in enumerate(missing) if v)
        findings.append(Finding(check="missing_style", message=detail, blamed=owners, action="strengthen" if owners else "resample",
                                images=_where(missing)))
    wrong_subject = [isinstance(v, JudgeVerdict) and v.wrong_subject for v in verdicts]
    if any(wrong_subject):  # a fresh seed first: the adapters it shared are only suspects
        detail = "; ".join(f"image {i + 1}: {v.message}" for i, (v, w) in enumerate(zip(verdicts, wrong_subject)) if w)
        findings.append(Finding(check="wrong_subject", message=detail, blamed=blame_images(wrong_subject, mixes),
                                action="suspect", images=_where(wrong_subject)))
    unfit = [v is not None and not isinstance(v, JudgeVerdict) for v in verdicts]
    if any(unfit):  # a plain-text reason names no cause: the adapters most associated with it weigh less
        blamed = blame_images(unfit, mixes)
        detail = "; ".join(f"image {i + 1}: {v}" for i, (v, u) in enumerate(zip(verdicts, unfit)) if u)
        findings.append(Finding(check="prompt_fit", message=detail, blamed=blamed, action="downweight" if blamed else "resample",
                                images=_where(unfit)))
    unasked = [isinstance(v, JudgeVerdict) and bool(v.unrequested) for v in verdicts]
    if any(unasked):  # no adapter asked for it: nothing to blame, the image is drawn again
        detail = "; ".join(f"image {i + 1}: style nobody asked for: {', '.join(v.unrequested)}"
                           for i, (v, u) in enumerate(zip(verdicts, unasked)) if u)
        findings.append(Finding(check="unrequested_style", message=detail, action="resample", images=_where(unasked)))
    for i, j in (near_duplicates(images, settings) if check_duplicates else []):
        if mixes[i] != mixes[j]:
            continue  # the same mix with other seeds may legitimately look alike in tiny worlds
        findings.append(Finding(check="duplicates", message=f"images {i + 1} and {j + 1} are near-identical despite different seeds",
                                blamed=list(mixes[i]), action="downweight", images=[j]))
    return findings
