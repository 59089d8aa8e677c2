"""The sampler tool: run the engine on a composition and stage the images in the image store.

Images are named by the sha256 of their PNG bytes and written atomically, so a crash never leaves a
half-written file and the same image is stored once. A run's images are staged (tools/image_store.py) and
published under their final names only once their rows exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageOps

from loracle.generation.composition import CompositionMethod
from loracle.generation.engine import GenerationRequest, GenerationResult, ImageEngine
from loracle.generation.guidance import GuidanceSettings
from loracle.generation.loop import Progress
from loracle.generation.masks import Composition
from loracle.generation.output import set_fields
from loracle.generation.skipping import SkipSettings
from loracle.tools.image_store import ImageStore, StagedFile


@dataclass(frozen=True)
class SampleSettings:
    steps: int = 30
    scheduler: str = "ddim"
    guidance: GuidanceSettings = GuidanceSettings()
    skipping: SkipSettings = SkipSettings()
    size: int | None = None
    composition_method: CompositionMethod = CompositionMethod()  # how a mix's task groups act: merge/switch/composite


@dataclass
class StoredImage:
    file: StagedFile  # its final name, and where it is until its row exists (tools/image_store.py)
    seed: int
    mix: dict[str, float]
    nfe: int
    parameters: str
    prompt: str


def resample(image: Image.Image, parameters: str, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """The image at `size` (width, height): scaled to cover it and centre-cropped, so proportions stay true;
    its `parameters` say the size it has and the size the model drew."""
    if image.size == size:
        return image, parameters
    drawn = f"{image.width}x{image.height}"
    resized = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    return resized, set_fields(parameters, {"Size": f"{size[0]}x{size[1]}", "Resampled from": drawn})


def sample(
    engine: ImageEngine,
    prompt: str,
    composition: Composition,
    seeds: list[int],
    settings: SampleSettings,
    store: ImageStore,
    *,
    negative_prompt: str = "",
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
    strength: float = 0.8,
    mask_feather: int = 0,
    output_size: tuple[int, int] | None = None,
    owner: int | None = None,
) -> tuple[GenerationResult, list[StoredImage]]:
    """`image` (and `mask`, white = repaint): image-to-image / inpainting at `strength`; else text-to-image.
    `output_size`: (width, height) the stored images get when the model draws another size (see `resample`).
    The images come back staged under `owner`'s name; the caller publishes them once their rows exist."""
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        mixes=composition,
        seeds=seeds,
        steps=settings.steps,
        scheduler=settings.scheduler,
        guidance=settings.guidance,
        skipping=settings.skipping,
        composition_method=settings.composition_method,
        height=settings.size,
        width=settings.size,
        callback=on_progress,
        cancel=cancel,
        image=image,
        mask=mask,
        strength=strength,
        mask_feather=mask_feather,
    )
    result = engine.generate(request)
    stored = []
    for image, seed, mix, nfe, parameters, used_prompt in zip(
        result.images, result.seeds, result.mixes, result.nfe, result.parameters, result.prompts
    ):
        if output_size is not None:
            image, parameters = resample(image, parameters, output_size)
        stored.append(StoredImage(store.stage(image, parameters, owner), seed, mix, nfe, parameters, used_prompt))
    return result, stored
