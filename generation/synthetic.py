"""Deterministic synthetic LoRA files for a base model (tests, demo, benchmarks), in two formats.

The same seeded weights are written either in diffusers/peft layout (`unet.<module>.lora_A.weight`) or in
kohya layout (`lora_unet_<module_with_underscores>.lora_down.weight` + `.alpha` + kohya `__metadata__`), so
loading both must give the same model output. kohya files use alpha = rank / 2; the diffusers file folds that
0.5 scale into lora_B, so the test also proves alphas are honoured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from loracle.generation.base_models import BaseModel

UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.2")
TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")

_KOHYA_VERSION = {"sd15": ("sd_v1", "stable-diffusion-v1/lora"), "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora")}
_KOHYA_TE = {"text_encoder": "lora_te", "text_encoder_2": "lora_te2"}


def _linears(model: torch.nn.Module, targets: tuple[str, ...]) -> list[tuple[str, torch.nn.Linear]]:
    """Target Linear layers by name, looking through peft wrappers if adapters are already loaded."""
    out = []
    for n, m in model.named_modules():
        layer = getattr(m, "base_layer", m)
        if n.endswith(targets) and isinstance(layer, torch.nn.Linear):
            out.append((n, layer))
    return out


def _targets(base: BaseModel, text_encoder: bool) -> list[tuple[str, str, torch.nn.Linear]]:
    out = [("unet", n, m) for n, m in _linears(base.unet, UNET_TARGETS)]
    if text_encoder:
        for comp in ("text_encoder", "text_encoder_2"):
            module = getattr(base, comp)
            if module is not None:
                out += [(comp, n, m) for n, m in _linears(module, TE_TARGETS)]
    return out


def write_synthetic_lora(
    path: str | os.PathLike,
    base: BaseModel,
    *,
    seed: int,
    fmt: Literal["diffusers", "kohya"] = "diffusers",
    rank: int = 4,
    strength: float = 1.0,
    text_encoder: bool = False,
    family: str | None = None,
) -> Path:
    """Write a seeded LoRA for `base` (same seed -> same weights in either format). `family` overrides the
    declared base family in the metadata (used to fake an SDXL adapter)."""
    if fmt not in ("diffusers", "kohya"):
        raise ValueError(f"fmt must be 'diffusers' or 'kohya', got {fmt!r}")
    gen = torch.Generator().manual_seed(seed)
    alpha = rank / 2
    tensors: dict[str, torch.Tensor] = {}
    for comp, name, layer in _targets(base, text_encoder):
        a = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features ** 0.5
        b = torch.randn(layer.out_features, rank, generator=gen) * strength / rank ** 0.5
        if fmt == "diffusers":
            tensors[f"{comp}.{name}.lora_A.weight"] = a.contiguous()
            tensors[f"{comp}.{name}.lora_B.weight"] = (b * (alpha / rank)).contiguous()
        else:
            prefix = "lora_unet" if comp == "unet" else _KOHYA_TE[comp]
            if comp == "text_encoder" and base.text_encoder_2 is not None:
                prefix = "lora_te1"  # kohya's SDXL naming
            stem = f"{prefix}_{name.replace('.', '_')}"
            tensors[f"{stem}.lora_down.weight"] = a.contiguous()
            tensors[f"{stem}.lora_up.weight"] = b.contiguous()
            tensors[f"{stem}.alpha"] = torch.tensor(alpha)
    fam = family or base.family
    version, arch = _KOHYA_VERSION.get(fam, (fam, fam))
    metadata = {"modelspec.architecture": arch, "loracle.synthetic_seed": str(seed)}
    if fmt == "kohya":
        metadata.update({
            "ss_base_model_version": version, "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
        })
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
