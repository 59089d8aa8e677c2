"""`MAREngine(bundle, adapter_dirs).generate(GenerationRequest)`: MAR behind the engine contract (`ImageEngine`).

Same request and result types as the diffusion `generation.engine.Engine`, so the agent's sampler tool, the CLI and the API
run a MAR unchanged. What the fields mean here:
  prompt      text for a text-conditioned MAR; for a class-conditional one (the official ImageNet MARs) the class
              index, e.g. "207";
  steps       AR steps K (at most the number of tokens N; larger values run N steps, said in `parameters`);
  guidance    "none" or "cfg" (linear CFG schedule over AR steps, the unconditional branch is the fake latent);
              autoguidance needs a guide diffusion model and is refused;
  scheduler, skipping   diffusion-loop settings, not used (the head's sampler is MAR's own respaced DDPM);
  negative_prompt       not used (MAR's unconditional branch is the learned fake latent, as in the paper);
  nfe         transformer evaluations per image (branches x AR steps); the head's MLP steps are in timings.
Mixes (dicts or a composer `Composition`) are grouped by the same `generate_grouped` run as the Engine's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from loracle.generation.engine import GenerationRequest, GenerationResult, generate_grouped
from loracle.generation.loop import decode_pixels
from loracle.generation.mar.adapters import MARAdapters
from loracle.generation.mar.io import MARBundle
from loracle.generation.mar.sampling import MARSampleOutput, MARSampleSettings, sample
from loracle.generation.masks import Mix


class MAREngine:
    """One MAR (with its text encoder), its LoRA adapters; generate() is serialised by the adapters' lock."""

    def __init__(self, bundle: MARBundle, adapter_dirs: list[str | Path] = (), *, max_loaded: int = 8,
                 allow_pickle: bool = False, temperature: float | None = None):
        self.bundle = bundle
        self.adapters = MARAdapters(bundle.model, list(adapter_dirs), max_loaded=max_loaded, allow_pickle=allow_pickle)
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

    @property
    def native_size(self) -> int:
        return self.bundle.sample_size

    @property
    def guide_names(self) -> frozenset[str]:
        return frozenset()  # autoguidance needs a guide diffusion model

    def generate(self, req: GenerationRequest) -> GenerationResult:
        settings = self.settings_for(req)
        head_calls = 0

        def sample_tokens(mix: Mix, prompt: str, indices: list[int], seeds: list[int]) -> MARSampleOutput:
            nonlocal head_calls
            out = sample(self.bundle.model, self._condition(prompt, len(seeds)), seeds, settings,
                         callback=req.callback, cancel=req.cancel)
            head_calls += out.head_calls
            return out

        size = self.bundle.sample_size
        extra = {"Generator": "MAR", "AR steps": settings.num_iter, "Temperature": settings.temperature,
                 "Head steps": self.bundle.model.config.num_sampling_steps, "Guidance": "cfg" if settings.cfg != 1 else "none"}
        parameters = dict(negative_prompt="", steps=settings.num_iter, sampler="MAR", cfg_scale=settings.cfg,
                          width=size, height=size, model=self.bundle.name, extra=extra)
        result = generate_grouped(req, self.adapters, sample=sample_tokens, parameters=parameters,
                                  decode_images=lambda out: decode_pixels(self.bundle.to_images(out.images)))
        result.timings["head_calls"] = float(head_calls)
        return result
