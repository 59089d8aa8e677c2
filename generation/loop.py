"""The denoising loop, owned by the project and shared by every base model (tiny, SD 1.5, SDXL, pixel space).

Counting, exactly: `model_calls` is the number of UNet forward calls; `nfe` (per image) is the number of noise
predictions computed for that image, one per evaluated branch per evaluated step (a batched cond+uncond CFG call
is 1 call and 2 evaluations; composite evaluates every group's branches). A skipped step adds nothing to either;
it forecasts from the last computed predictions (`generation.skipping`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from loracle.generation.base_models import BaseModel
from loracle.generation.composition import CompositionMethod
from loracle.generation.edit import EditInputs, edit_steps, is_inpainting_unet
from loracle.generation.guidance import GuidanceSettings, combine_groups
from loracle.generation.schedulers import ANCESTRAL, CLIPS_ITSELF, clamp_x0, make_scheduler, step_sigma, x0_range
from loracle.generation.skipping import SkipSettings, SkipState


class GenerationCancelled(RuntimeError):
    """The caller's cancel event was set; no images were produced for this call."""


# ------------------------------------------------------------------------------------------------ prompts


@dataclass
class Conditioning:
    """Text conditioning for one branch: hidden states and, for SDXL, the added time/text embeddings."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def index(self, idx: torch.Tensor) -> Conditioning:
        added = {k: v[idx] for k, v in self.added.items()} if self.added else None
        return Conditioning(self.embeds[idx], added)


def _tokens(tokenizer, prompts: list[str], device) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


@torch.no_grad()
def encode_prompts(model: BaseModel, prompts: list[str], height: int, width: int) -> Conditioning:
    """SD 1.5: last hidden state. SDXL: penultimate states of both encoders + pooled embeds + size ids."""
    if model.text_encoder_2 is None:
        return Conditioning(model.text_encoder(_tokens(model.tokenizer, prompts, model.device))[0].to(model.dtype))
    out1 = model.text_encoder(_tokens(model.tokenizer, prompts, model.device), output_hidden_states=True)
    out2 = model.text_encoder_2(_tokens(model.tokenizer_2, prompts, model.device), output_hidden_states=True)
    embeds = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1).to(model.dtype)
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=model.device, dtype=model.dtype)
    added = {"text_embeds": out2.text_embeds.to(model.dtype), "time_ids": time_ids.repeat(len(prompts), 1)}
    return Conditioning(embeds, added)


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class Branch:
    """One noise-prediction branch. Branches sharing (model, state) are batched into one UNet call; `state`
    enters the adapter state that branch needs (e.g. adapters disabled for the guide). `group`: the adapter
    group the branch runs with (None: shared by every group, as a guide is)."""

    name: str
    model: BaseModel
    cond: Conditioning
    state: Callable[[], AbstractContextManager] | None = None
    group: int | None = 0


@dataclass
class Progress:
    step: int  # 1-based index of the finished step
    steps: int
    computed: int  # samples whose model was evaluated at this step
    model_calls: int


@dataclass
class LoopOutput:
    latents: torch.Tensor
    nfe: list[int]  # per sample
    model_calls: int
    computed_steps: list[list[int]] = field(default_factory=list)  # per sample, evaluated step indices


def initial_latents(model: BaseModel, seeds: list[int], height: int, width: int) -> torch.Tensor:
    """Noise drawn per seed on CPU, so an image depends only on its own seed (not on batch or device)."""
    f = model.vae_scale_factor
    multiple = f * 2 ** (len(model.unet.config.block_out_channels) - 1)
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of {multiple} for {model.name}, "
                         f"got {height}x{width}")
    shape = (1, model.latent_channels, height // f, width // f)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.cat(noise).to(model.device, model.dtype)


def _calls(branches: list[Branch]) -> list[list[Branch]]:
    """Branches batched per UNet call: same model, same adapter state."""
    calls: dict[Hashable, list[Branch]] = {}
    for b in branches:
        calls.setdefault((id(b.model.unet), id(b.state)), []).append(b)
    return list(calls.values())


@torch.no_grad()
def denoise(
    branches: list[Branch],
    latents: torch.Tensor,
    *,
    scheduler_name: str,
    steps: int,
    guidance: GuidanceSettings,
    skipping: SkipSettings | None = None,
    composition: CompositionMethod | None = None,
    seeds: list[int] | None = None,
    callback: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    edit: EditInputs | None = None,
) -> LoopOutput:
    """Run the scheduler's timesteps; evaluate the active groups' branches where the skip state says so;
    combine (per group, then averaged); keep the predicted x0 in range; step.

    `latents` is the seeded noise. With `edit` (image-to-image / inpainting) only the last
    round(strength x steps) timesteps run, from the input noised to the first of them (pure noise at
    strength 1, as text-to-image); a mask keeps its black region by blending in the input re-noised to the
    next timestep after every step, or, for inpainting UNets, goes in as extra input channels.
    A skipped step forecasts from the last computed predictions (or reuses them); under switch, a step where the
    next group takes over always calls the model, so a group never runs on another group's prediction."""
    composition = composition or CompositionMethod()
    main = next(b for b in branches if b.name == "cond").model
    bound = x0_range(main.scheduler_config, main.pixel_space)
    scheduler = make_scheduler(scheduler_name, main.scheduler_config, bound)
    scheduler.set_timesteps(steps, device=main.device)
    timesteps = scheduler.timesteps
    noise, batch = latents, latents.shape[0]
    blend = edit is not None and edit.mask is not None and not is_inpainting_unet(main)
    start = 0 if edit is None else len(timesteps) - edit_steps(edit.strength, len(timesteps))
    # An explicit begin index: Karras sigmas can map several steps to one timestep, and looking the step up by
    # timestep then lands on the wrong one.
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    clamp = bound is not None and scheduler_name not in CLIPS_ITSELF
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if edit is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        timesteps = timesteps[start:]
        if len(timesteps) == 0:  # strength 0: the input itself, no model evaluation
            return LoopOutput(edit.image_latents.clone(), [0] * batch, 0, [[] for _ in range(batch)])
        if edit.strength >= 1.0:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(edit.image_latents, noise, timesteps[:1].repeat(batch))
    groups = sorted({b.group for b in branches if b.group is not None})
    if skipping is not None and scheduler_name in ANCESTRAL:  # fresh noise every step: a forecast overshoots
        skipping = replace(skipping, forecast=False)
    skip = SkipState(skipping, batch, len(timesteps))
    skip.start(latents)
    cache: dict[tuple[str, int | None], torch.Tensor] = {}
    nfe = [0] * batch
    computed_steps: list[list[int]] = [[] for _ in range(batch)]
    calls = 0
    gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds] if seeds else None
    for i, t in enumerate(timesteps):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before step {i + 1}/{len(timesteps)}")
        active = [groups[k] for k in composition.active_groups(i, len(groups))]
        evaluated = [b for b in branches if b.group is None or b.group in active]
        mask = skip.compute_mask(i)
        if composition.starts_turn(i):
            mask[:] = True
            skip.forget()
        if any((b.name, b.group) not in cache for b in evaluated):
            mask[:] = True
        idx = mask.nonzero().flatten()
        if len(idx):
            x_in = scheduler.scale_model_input(latents[idx], t)
            for call in _calls(evaluated):
                model = call[0].model
                conds = [b.cond.index(idx.to(b.cond.embeds.device)) for b in call]
                added = None
                if conds[0].added:
                    added = {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
                x_model = x_in
                if edit is not None and is_inpainting_unet(model):
                    x_model = torch.cat([x_in, edit.extra_channels(idx).to(x_in)], dim=1)
                with (call[0].state() if call[0].state else nullcontext()):
                    out = model.unet(
                        torch.cat([x_model] * len(call)).to(model.dtype), t,
                        encoder_hidden_states=torch.cat([c.embeds for c in conds]),
                        added_cond_kwargs=added, return_dict=False,
                    )[0]
                calls += 1
                for b, pred in zip(call, out.chunk(len(call))):
                    key = (b.name, b.group)
                    if key not in cache:
                        cache[key] = torch.zeros_like(latents, dtype=pred.dtype)
                    cache[key][idx] = pred
            for j in idx.tolist():
                nfe[j] += len(evaluated)
                computed_steps[j].append(i)
        noise_pred = combine_groups(guidance, cache, active).to(latents.dtype)
        sigma = step_sigma(scheduler, t, start + i)
        noise_pred = skip.fill(noise_pred, mask, math.log(max(sigma, 1e-12)))
        if clamp:
            noise_pred = clamp_x0(noise_pred, latents, sigma=sigma, scheduler_name=scheduler_name,
                                  prediction_type=prediction_type, bound=bound)
        step_kwargs = {"generator": gens} if scheduler_name == "euler_a" and gens else {}
        latents = scheduler.step(noise_pred, t, latents, return_dict=False, **step_kwargs)[0]
        if blend:
            known = edit.image_latents
            if i < len(timesteps) - 1:
                known = scheduler.add_noise(known, noise, timesteps[i + 1:i + 2].repeat(batch))
            latents = (1 - edit.mask) * known.to(latents.dtype) + edit.mask * latents
        skip.observe(latents)
        if callback is not None:
            callback(Progress(i + 1, len(timesteps), len(idx), calls))
    return LoopOutput(latents, nfe, calls, computed_steps)


@torch.no_grad()
def decode(model: BaseModel, latents: torch.Tensor) -> list[Image.Image]:
    """Latents -> PIL images (pixel-space models: the latents are the images, in [-1, 1])."""
    if model.vae is not None:
        vae = model.vae
        z = latents.to(next(vae.parameters()).dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        latents = vae.decode(z, return_dict=False)[0]
    return decode_pixels(latents)


def decode_pixels(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) images in [-1, 1] -> PIL (1 channel: mode L; else RGB from the first three)."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in arr]
    return [Image.fromarray(np.ascontiguousarray(a[..., :3])) for a in arr]
