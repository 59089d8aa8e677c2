"""`MAREngine(bundle, adapter_dirs).generate(GenerationRequest)`: MAR behind the diffusion Engine's contract.

Same request and result types as `generation.engine.Engine`, so the agent's sampler tool, the CLI and the API
run a MAR unchanged. What the fields mean here:
  prompt      text for a text-conditioned MAR; for a class-conditional one (the official ImageNet MARs) the class
              index, e.g. "207";
  steps       AR steps K (at most the number of tokens N; larger values run N steps, said in `parameters`);
  guidance    "none" or "cfg" (linear CFG schedule over AR steps, the unconditional branch is the fake latent);
              autoguidance needs a guide diffusion model and is refused;
  scheduler, skipping   diffusion-loop settings, not used (the head's sampler is MAR's own respaced DDPM);
  negative_prompt       not used (MAR's unconditional branch is the learned fake latent, as in the paper);
  nfe         transformer evaluations per image (branches x AR steps); the head's MLP steps are in timings.
Mixes (dicts or a composer `Composition`) are grouped as in the Engine: one sampling call per distinct mix.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from loracle.generation.adapters import parse_lora_tags
from loracle.generation.engine import GenerationRequest, GenerationResult
from loracle.generation.loop import decode_pixels
from loracle.generation.mar.adapters import MARAdapters
from loracle.generation.mar.io import MARBundle
from loracle.generation.mar.sampling import MARSampleSettings, sample
from loracle.generation.masks import Mix, group_mixes
from loracle.generation.output import format_parameters


class MAREngine:
    """One MAR (with its text encoder), its LoRA adapters; generate() is serialised by `lock`."""

    def __init__(self, bundle: MARBundle, adapter_dirs: list[str | Path] = (), *, max_loaded: int = 8,
                 allow_pickle: bool = False, temperature: float | None = None):
        self.bundle = bundle
        self.base = bundle
        self.adapters = MARAdapters(bundle.model, list(adapter_dirs), max_loaded=max_loaded, allow_pickle=allow_pickle)
        self.lock = self.adapters.lock
        self.guide_models: dict = {}  # no autoguidance for MAR
        self.temperature = float(temperature if temperature is not None else bundle.sampling.get("temperature", 1.0))

    def _condition(self, prompt: str, n: int) -> torch.Tensor:
        b = self.bundle
        if b.model.config.cond == "class":  # e.g. an official ImageNet MAR: the prompt is the class index
            label = prompt.strip()
            if not label.isdigit() or int(label) >= b.model.config.class_num:
                raise ValueError(f"MAR '{b.name}' is class-conditional: the prompt must be a class index in "
                                 f"[0, {b.model.config.class_num}), got {prompt!r}")
            return torch.full((n,), int(label), dtype=torch.long, device=b.model.fake_latent.device)
        ids = b.tokenizer([prompt] * n, padding="max_length", max_length=b.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
        return b.text_encoder(ids.to(b.model.fake_latent.device))[0]

    def settings_for(self, req: GenerationRequest) -> MARSampleSettings:
        g = req.guidance
        if g.kind not in ("none", "cfg"):
            raise ValueError(f"MAR supports guidance 'none' or 'cfg', not {g.kind!r} (autoguidance needs a guide "
                             "diffusion model)")
        if req.height not in (None, self.bundle.sample_size) or req.width not in (None, self.bundle.sample_size):
            raise ValueError(f"MAR '{self.bundle.name}' draws {self.bundle.sample_size}x{self.bundle.sample_size} "
                             f"images only, got {req.width}x{req.height}")
        cfg = float(g.scale) if g.kind == "cfg" else 1.0
        if cfg < 1.0:
            raise ValueError(f"MAR's CFG scale must be >= 1, got {cfg}")
        return MARSampleSettings(num_iter=min(req.steps, self.bundle.model.seq_len), cfg=cfg,
                                 temperature=self.temperature, clip_x0=bool(self.bundle.sampling.get("clip_x0", False)))

    def generate(self, req: GenerationRequest) -> GenerationResult:
        t0 = time.perf_counter()
        prompt, tag_picks = parse_lora_tags(req.prompt)
        settings = self.settings_for(req)
        mixes = [Mix.from_dict({**m.as_dict(), **tag_picks}, m.triggers) for m in req.image_mixes()]
        for mix in set(mixes):  # check every adapter before sampling anything
            for ref in mix.as_dict():
                self.adapters.get(ref)
        n = req.n_images
        images: list[Image.Image | None] = [None] * n
        nfe, prompts = [0] * n, [""] * n
        calls = pipeline_calls = head_calls = 0
        timings = {"adapters_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}
        for mix, indices in group_mixes(mixes).items():
            for start in range(0, len(indices), req.max_batch):
                chunk = indices[start:start + req.max_batch]
                p = mix.apply_to_prompt(prompt)
                with self.lock, torch.no_grad():
                    ta = time.perf_counter()
                    self.adapters.activate(mix.as_dict())
                    timings["adapters_s"] += time.perf_counter() - ta
                    td = time.perf_counter()
                    out = sample(self.bundle.model, self._condition(p, len(chunk)), [req.seeds[i] for i in chunk],
                                 settings, callback=req.callback, cancel=req.cancel)
                    tdec = time.perf_counter()
                    imgs = decode_pixels(self.bundle.to_images(out.images))
                    timings["denoise_s"] += tdec - td
                    timings["decode_s"] += time.perf_counter() - tdec
                pipeline_calls += 1
                calls += out.model_calls
                head_calls += out.head_calls
                for j, i in enumerate(chunk):
                    images[i], nfe[i], prompts[i] = imgs[j], out.nfe[j], p
        timings["total_s"] = time.perf_counter() - t0
        size = self.bundle.sample_size
        extra = {"Generator": "MAR", "AR steps": settings.num_iter, "Temperature": settings.temperature,
                 "Head steps": self.bundle.model.config.num_sampling_steps, "Guidance": "cfg" if settings.cfg != 1 else "none"}
        params = [format_parameters(prompt=prompts[i], negative_prompt="", steps=settings.num_iter, sampler="MAR",
                                    cfg_scale=settings.cfg, seed=req.seeds[i], width=size, height=size,
                                    model=self.bundle.name, mix=mixes[i].as_dict(), nfe=nfe[i], extra=extra)
                  for i in range(n)]
        return GenerationResult(images=images, seeds=list(req.seeds), mixes=[m.as_dict() for m in mixes],
                                prompts=prompts, nfe=nfe, model_calls=calls, pipeline_calls=pipeline_calls,
                                timings={**timings, "head_calls": float(head_calls)}, parameters=params)
