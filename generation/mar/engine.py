"""`MAREngine(bundle, adapter_dirs).generate(GenerationRequest)`: MAR behind the engine contract (`ImageEngine`).

Same request and result types as the diffusion `generation.engine.Engine`, so the agent's sampler tool, the CLI and the API
run a MAR unchanged. What the fields mean here:
  prompt      text for a text-conditioned MAR; for a class-conditional one (the official ImageNet MARs) the class
              index, e.g. "207";
  steps       AR steps K (at most the number of tokens N; larger values run N steps, said in `parameters`);
  guidance    "none" or "cfg" (linear CFG schedule over AR steps, the unconditional branch is the fake latent);
              "auto" / "both" with the MAR itself as the guide: without adapters (adapter guidance) or under
              another mix; a separate guide model is refused (MAR has none);
  composition_method   merge, switch (one adapter group per AR step) or composite (every group's guided head
              prediction, averaged, at every head step);
  scheduler, skipping   diffusion-loop settings, not used (the head's sampler is MAR's own respaced DDPM);
  negative_prompt       not used (MAR's unconditional branch is the learned fake latent, as in the paper);
  nfe         transformer evaluations per image (branches x AR steps); the head's MLP steps are in timings.
Mixes (dicts or a composer `Composition`) are grouped by the same `generate_grouped` run as the Engine's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from loracle.generation.composition import adapter_state
from loracle.generation.engine import GenerationRequest, GenerationResult, generate_grouped
from loracle.generation.loop import decode_pixels
from loracle.generation.mar.adapters import MARAdapters
from loracle.generation.mar.io import MARBundle
from loracle.generation.mar.sampling import MARBranch, MARSampleOutput, MARSampleSettings, sample_branches
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
        if g.kind in ("auto", "both") and g.guide.kind == "model":
            raise ValueError("MAR has no guide models: autoguidance on a MAR guides with the MAR itself, without "
                             "adapters (guide kind 'no_adapters') or under another adapter mix (guide kind 'mix')")
        if req.height not in (None, self.bundle.sample_size) or req.width not in (None, self.bundle.sample_size):
            raise ValueError(f"MAR '{self.bundle.name}' draws {self.bundle.sample_size}x{self.bundle.sample_size} "
                             f"images only, got {req.width}x{req.height}")
        cfg = float(g.scale) if g.kind != "none" else 1.0
        if cfg < 1.0:
            raise ValueError(f"MAR's guidance scale must be >= 1, got {cfg}")
        return MARSampleSettings(num_iter=min(req.steps, self.bundle.model.seq_len), cfg=cfg,
                                 temperature=self.temperature, clip_x0=bool(self.bundle.sampling.get("clip_x0", False)))

    @property
    def native_size(self) -> int:
        return self.bundle.sample_size

    @property
    def guide_names(self) -> frozenset[str]:
        return frozenset()  # MAR guides with itself (no adapters, or another mix), never a separate model

    def _branches(self, req: GenerationRequest, mix: Mix, prompt: str, n: int) -> list[MARBranch]:
        """cond (and the fake-latent uncond for CFG) per adapter group; the guide once, shared by every group."""
        g = req.guidance
        cond = self._condition(prompt, n)
        branches: list[MARBranch] = []
        for group, weights in enumerate(req.composition_method.adapter_states(mix)):
            state = adapter_state(self.adapters, weights) if weights is not None else None
            branches.append(MARBranch("cond", cond, state, group))
            if "uncond" in g.branches:
                branches.append(MARBranch("uncond", None, state, group))
        if "guide" in g.branches:
            state = (self.adapters.disabled if g.guide.kind == "no_adapters"
                     else adapter_state(self.adapters, g.guide.mix, restore=mix))
            branches.append(MARBranch("guide", cond, state, None))
        return branches

    def generate(self, req: GenerationRequest) -> GenerationResult:
        settings = self.settings_for(req)
        head_calls = 0

        def sample_tokens(mix: Mix, prompt: str, indices: list[int], seeds: list[int]) -> MARSampleOutput:
            nonlocal head_calls
            out = sample_branches(self.bundle.model, self._branches(req, mix, prompt, len(seeds)), seeds, settings,
                                  req.guidance, req.composition_method, callback=req.callback, cancel=req.cancel)
            head_calls += out.head_calls
            return out

        size = self.bundle.sample_size
        g = req.guidance
        extra = {"Generator": "MAR", "AR steps": settings.num_iter, "Temperature": settings.temperature,
                 "Head steps": self.bundle.model.config.num_sampling_steps, "Guidance": g.kind,
                 **({"Guide": g.guide.kind} if "guide" in g.branches else {}), **req.composition_method.parameters()}
        parameters = dict(negative_prompt="", steps=settings.num_iter, sampler="MAR", cfg_scale=settings.cfg,
                          width=size, height=size, model=self.bundle.name, extra=extra)
        guide_refs = frozenset(g.guide.mix) if "guide" in g.branches else frozenset()
        result = generate_grouped(req, self.adapters, sample=sample_tokens, parameters=parameters,
                                  decode_images=lambda out: decode_pixels(self.bundle.to_images(out.images)),
                                  steps=settings.num_iter, guide_refs=guide_refs)
        result.timings["head_calls"] = float(head_calls)
        return result
