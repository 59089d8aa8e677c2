"""The engine contract: `GenerationRequest` in, `GenerationResult` out, through any `ImageEngine`.

`Engine(base, adapter_dirs)` is the diffusion engine; `generation.mar.engine.MAREngine` is the MAR one. Both
run a request through `generate_grouped`: identical mixes are grouped, so N images over M distinct mixes cost M
sampling calls (more only when a group exceeds `max_batch`).

Concurrency: adapter state is global on the model's modules, so one sampling call (activate mix -> encode ->
sample -> decode) runs under the adapters' lock (an RLock). Concurrent `generate` calls on one engine are
therefore serialised per sampling call and never see each other's adapters; use one engine (and model copy)
per worker for parallelism.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from PIL import Image

from loracle.generation.adapters import AdapterManager
from loracle.generation.base_models import BaseModel
from loracle.generation.composition import CompositionMethod, adapter_state
from loracle.generation.edit import check_edit_inputs, edit_steps, prepare_edit
from loracle.generation.guidance import GuidanceSettings
from loracle.generation.hashes import lora_short_hash
from loracle.generation.loop import Branch, LoopOutput, Progress, decode, denoise, encode_prompts, initial_latents
from loracle.generation.masks import Composition, Mix, group_mixes
from loracle.generation.output import format_parameters, lora_name, save_png
from loracle.generation.prompt_tags import parse_lora_tags
from loracle.generation.schedulers import SCHEDULERS
from loracle.generation.skipping import SkipSettings


@dataclass
class GenerationRequest:
    """What to generate. `mixes`: one {adapter ref: weight} per image (or a Composition); None means
    `n_images` images with no adapters beyond `<lora:...>` tags in the prompt, which apply to every image."""

    prompt: str
    negative_prompt: str = ""
    mixes: list[dict[str, float]] | Composition | None = None
    n_images: int = 1
    seed: int = 0
    seeds: list[int] | None = None
    steps: int = 30
    scheduler: str = "dpmpp_2m"
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    skipping: SkipSettings | None = field(default_factory=SkipSettings)  # None: every step calls the model
    composition_method: CompositionMethod = field(default_factory=CompositionMethod)  # merge / switch / composite
    height: int | None = None
    width: int | None = None
    max_batch: int = 8
    callback: Callable[[Progress], None] | None = None
    cancel: threading.Event | None = None
    image: Image.Image | list[Image.Image] | None = None  # img2img / inpainting input(s), one or one per image
    mask: Image.Image | list[Image.Image] | None = None  # inpainting: white = repaint, black = keep; as `image`
    strength: float = 0.8  # with `image`: 0 = the input unchanged, 1 = text-to-image (ignored without one)
    mask_feather: int = 0  # Gaussian blur radius of the mask, in pixels (0 = hard edge)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if isinstance(self.mixes, Composition):
            n = len(self.mixes.mixes)
        elif self.mixes is not None:
            n = len(self.mixes)
        elif self.seeds is not None:
            n = len(self.seeds)
        else:
            n = self.n_images
        if self.mixes is not None and n == 0:
            raise ValueError("mixes must hold one mix per image; got an empty list")
        self.n_images = n
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.seeds is None:
            self.seeds = [self.seed + i for i in range(self.n_images)]
        if len(self.seeds) != self.n_images:
            raise ValueError(f"got {len(self.seeds)} seeds for {self.n_images} images")
        if not (1 <= self.steps <= 1000):
            raise ValueError(f"steps must be in [1, 1000], got {self.steps}")
        if self.skipping is None:
            self.skipping = SkipSettings(threshold=0.0)
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not isinstance(self.composition_method, CompositionMethod):
            raise ValueError(f"composition_method must be a CompositionMethod, got {type(self.composition_method).__name__}")
        check_edit_inputs(self.image, self.mask, self.strength, self.mask_feather, self.n_images)
        if self.mixes is not None and not isinstance(self.mixes, Composition):
            for i, mix in enumerate(self.mixes):
                for ref, w in mix.items():
                    if not isinstance(w, (int, float)) or not (-4.0 <= w <= 4.0):
                        raise ValueError(f"mix {i}: weight of {ref!r} must be a number in [-4, 4], got {w!r}")

    def image_mixes(self) -> list[Mix]:
        if isinstance(self.mixes, Composition):
            return list(self.mixes.mixes)
        return [Mix.from_dict(m or {}) for m in (self.mixes or [None] * self.n_images)]


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    mixes: list[dict[str, float]]
    prompts: list[str]
    nfe: list[int]  # per image: noise predictions computed (branches x evaluated steps)
    model_calls: int  # UNet forward calls over the whole request
    pipeline_calls: int  # denoising loops run (one per distinct mix, per max_batch chunk)
    timings: dict[str, float]
    parameters: list[str]  # A1111 `parameters` text per image
    served_by: str | None = None  # the Sampler replica that drew them, on Ray (None: this process)

    def save(self, folder: str | Path, stem: str = "image") -> list[Path]:
        return [save_png(im, Path(folder) / f"{stem}-{i:03d}-{s}.png", p)
                for i, (im, s, p) in enumerate(zip(self.images, self.seeds, self.parameters))]


class ImageEngine(Protocol):
    """What callers (the sampler tool, the API, the evals) use of an engine, whatever the generator family."""

    @property
    def native_size(self) -> int:
        """The image side the model was trained at; a request without height/width gets it."""
        ...

    @property
    def guide_names(self) -> frozenset[str]:
        """Guide models registered for autoguidance (`GuideSpec(kind="model", model=NAME)`); empty if none."""
        ...

    def generate(self, req: GenerationRequest) -> GenerationResult: ...


class Adapters(Protocol):
    """An engine's adapter slots: both families' managers load, check and switch adapters this way."""

    lock: AbstractContextManager
    max_loaded: int

    def get(self, ref: str) -> Any: ...

    def activate(self, mix: Mapping[str, float]) -> None: ...


class SamplingOutput(Protocol):
    """What one sampling call returns before decoding, as far as the grouped run counts it."""

    nfe: list[int]
    model_calls: int


Sampled = TypeVar("Sampled", bound=SamplingOutput)


def generate_grouped(
    req: GenerationRequest,
    adapters: Adapters,
    *,
    sample: Callable[[Mix, str, list[int], list[int]], Sampled],
    decode_images: Callable[[Sampled], list[Image.Image]],
    parameters: dict[str, Any],
    steps: int,
    guide_refs: frozenset[str] = frozenset(),
) -> GenerationResult:
    """The run every engine shares: apply the prompt's `<lora:...>` tags, check every mix (its composition
    method over the `steps` each image runs, every adapter) before sampling anything, then one
    `sample(mix, prompt, indices, seeds)` + `decode_images` call per distinct mix and `max_batch` chunk, under
    the adapters' lock. `parameters`: the `format_parameters` fields every image of the request shares
    (sampler, steps, size, model, ...); `guide_refs`: adapters a guide branch loads too."""
    started = time.perf_counter()
    prompt, tag_picks = parse_lora_tags(req.prompt)
    mixes = [m.with_adapters(tag_picks) for m in req.image_mixes()]
    lora_hashes: dict[str, str] = {}
    for mix in set(mixes):
        req.composition_method.check(mix, steps)
        refs = set(mix.as_dict()) | guide_refs
        if len(refs) > adapters.max_loaded:
            raise ValueError(f"A mix plus its guide mix needs {len(refs)} adapters loaded at once; "
                             f"max_loaded is {adapters.max_loaded}")
        for ref in refs:
            lora_hashes[lora_name(ref)] = lora_short_hash(adapters.get(ref).path)
    n = req.n_images
    images: list[Image.Image | None] = [None] * n
    nfe, prompts = [0] * n, [""] * n
    calls = pipeline_calls = 0
    timings = {"adapters_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}
    for mix, indices in group_mixes(mixes).items():
        for start in range(0, len(indices), req.max_batch):
            chunk = indices[start:start + req.max_batch]
            chunk_prompt = mix.apply_to_prompt(prompt)
            with adapters.lock, torch.no_grad():
                t_adapters = time.perf_counter()
                adapters.activate(mix.as_dict())
                t_sample = time.perf_counter()
                out = sample(mix, chunk_prompt, chunk, [req.seeds[i] for i in chunk])
                t_decode = time.perf_counter()
                decoded = decode_images(out)
                timings["adapters_s"] += t_sample - t_adapters
                timings["denoise_s"] += t_decode - t_sample
                timings["decode_s"] += time.perf_counter() - t_decode
            pipeline_calls += 1
            calls += out.model_calls
            for j, i in enumerate(chunk):
                images[i], nfe[i], prompts[i] = decoded[j], out.nfe[j], chunk_prompt
    timings["total_s"] = time.perf_counter() - started
    texts = [format_parameters(prompt=prompts[i], seed=req.seeds[i], mix=mixes[i].as_dict(), nfe=nfe[i],
                               lora_hashes=lora_hashes, **parameters) for i in range(n)]
    return GenerationResult(images=images, seeds=list(req.seeds), mixes=[m.as_dict() for m in mixes],
                            prompts=prompts, nfe=nfe, model_calls=calls, pipeline_calls=pipeline_calls,
                            timings=timings, parameters=texts)


class Engine:
    """The diffusion engine: one base model, its adapters (bounded caches), optional guide models for
    autoguidance; generate() is thread-safe."""

    def __init__(
        self,
        base: BaseModel,
        adapter_dirs: list[str | Path] = (),
        *,
        ram_cache_bytes: int = 512 * 2**20,
        max_loaded: int = 8,
        allow_pickle: bool = False,
        guide_models: dict[str, BaseModel] | None = None,
    ):
        self.base = base
        self.adapters = AdapterManager.for_model(base, list(adapter_dirs), ram_cache_bytes=ram_cache_bytes,
                                                 max_loaded=max_loaded, allow_pickle=allow_pickle)
        self.guide_models: dict[str, BaseModel] = {}
        for name, model in (guide_models or {}).items():
            self.register_guide(name, model)

    def register_guide(self, name: str, model: BaseModel) -> None:
        """A weaker model for autoguidance (same family and latent space as the base)."""
        b = self.base
        if (model.family, model.latent_channels, model.vae is None) != (b.family, b.latent_channels, b.vae is None):
            raise ValueError(f"Guide model '{name}' ({model.family}, {model.latent_channels} channels, "
                             f"{'pixel' if model.vae is None else 'latent'} space) does not match base '{b.name}'")
        self.guide_models[name] = model

    @property
    def native_size(self) -> int:
        return self.base.sample_size

    @property
    def guide_names(self) -> frozenset[str]:
        return frozenset(self.guide_models)

    def generate(self, req: GenerationRequest) -> GenerationResult:
        height = req.height or self.base.sample_size
        width = req.width or self.base.sample_size
        g = req.guidance
        if g.kind in ("auto", "both") and g.guide.kind == "model" and g.guide.model not in self.guide_models:
            raise ValueError(f"Unknown guide model {g.guide.model!r}; registered: {sorted(self.guide_models)}")
        guide_refs = frozenset(g.guide.mix) if g.kind in ("auto", "both") and g.guide.kind == "mix" else frozenset()
        edit = prepare_edit(self.base, req.image, req.mask, req.strength, height, width, req.mask_feather)

        def sample(mix: Mix, prompt: str, indices: list[int], seeds: list[int]) -> LoopOutput:
            branches = self._branches(req, mix, prompt, len(seeds), height, width)
            return denoise(branches, initial_latents(self.base, seeds, height, width),
                           scheduler_name=req.scheduler, steps=req.steps, guidance=g, skipping=req.skipping,
                           composition=req.composition_method, seeds=seeds, callback=req.callback,
                           cancel=req.cancel, edit=edit.rows(indices) if edit is not None else None)

        parameters = dict(negative_prompt=req.negative_prompt, steps=req.steps, sampler=req.scheduler,
                          cfg_scale=g.scale if g.kind != "none" else 1.0, width=width, height=height,
                          model=self.base.name, model_hash=self.base.short_hash, extra=self._extra(req))
        steps_run = edit_steps(req.strength, req.steps) if req.image is not None else req.steps
        return generate_grouped(req, self.adapters, sample=sample, decode_images=lambda out: decode(self.base, out.latents),
                                parameters=parameters, steps=steps_run, guide_refs=guide_refs)

    @staticmethod
    def _extra(req: GenerationRequest) -> dict[str, object]:
        g, s = req.guidance, req.skipping
        extra: dict[str, object] = {"Guidance": g.kind, **req.composition_method.parameters()}
        if g.kind in ("auto", "both"):
            extra["Guide"] = g.guide.model or g.guide.kind
        if g.kind == "both":
            extra["Guidance a"] = g.a
        if req.image is not None:  # A1111 writes img2img strength as "Denoising strength"
            extra["Denoising strength"] = req.strength
            if req.mask is not None:
                extra["Mask blur"] = req.mask_feather
        if s.enabled:
            extra["Skip threshold"] = s.threshold
            extra["Max skip"] = s.max_skip
        return extra

    def _branches(self, req: GenerationRequest, mix: Mix, prompt: str, n: int, h: int, w: int) -> list[Branch]:
        """Encode each branch's text under the adapter state that branch samples with (TE LoRAs matter):
        uncond and cond once per adapter group, the guide once, shared by every group."""
        base, g = self.base, req.guidance
        branches: list[Branch] = []
        for group, weights in enumerate(req.composition_method.adapter_states(mix)):
            state = adapter_state(self.adapters, weights) if weights is not None else None
            with state() if state else nullcontext():
                if "uncond" in g.branches:
                    branches.append(Branch("uncond", base, encode_prompts(base, [req.negative_prompt] * n, h, w),
                                           state, group))
                branches.append(Branch("cond", base, encode_prompts(base, [prompt] * n, h, w), state, group))
        if "guide" in g.branches:
            spec = g.guide
            if spec.kind == "model":
                guide = self.guide_models[spec.model]
                branches.append(Branch("guide", guide, encode_prompts(guide, [prompt] * n, h, w), group=None))
            else:
                state = (self.adapters.disabled if spec.kind == "no_adapters"
                         else adapter_state(self.adapters, spec.mix, restore=mix))
                with state():
                    cond = encode_prompts(base, [prompt] * n, h, w)
                branches.append(Branch("guide", base, cond, state, group=None))
        return branches
