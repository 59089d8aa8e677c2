"""Writing the world's models and adapters in the layouts real ones use.

Base and guide: a diffusers folder (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json), which
`generation.base_models.load_base_model` loads like any SD 1.5 folder (no vae/: pixel space). LoRAs: safetensors in
diffusers/peft layout or in kohya layout, so both loader paths of `generation/` are exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from loracle.evals.world.train import SCHEDULER_CONFIG

BASE_MODEL_NAME = "Digits 1.0"
MAR_MODEL_NAME = "Digits MAR 1.0"


def save_model(folder: Path, unet, text_encoder, tokenizer, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    sched = {"_class_name": "DDIMScheduler", **SCHEDULER_CONFIG}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
        "vae": [None, None], "safety_checker": [None, None], "feature_extractor": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "loracle_model.json").write_text(json.dumps({"family": "sd15", "name": name}) + "\n")
    return folder


def save_lora(path: Path, peft_tensors: dict[str, torch.Tensor], fmt: str, rank: int, metadata: dict[str, str]) -> Path:
    """peft keys ("down_blocks.0.resnets.0.conv1.lora_A.weight", scale alpha/rank = 1) -> a LoRA file.

    diffusers: "unet.<module>.lora_A.weight"; kohya: "lora_unet_<module_with_underscores>.lora_down.weight",
    ".lora_up.weight" and ".alpha" (= rank, so the scale stays 1) plus kohya's ss_* metadata.
    No base-family metadata is written: the digits model is neither SD 1.5 nor SDXL, and shape checks refuse
    these adapters on any other base anyway.
    """
    if fmt not in ("diffusers", "kohya"):
        raise ValueError(f"fmt must be 'diffusers' or 'kohya', got {fmt!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in sorted(peft_tensors.items()):
        module, kind = key.rsplit(".lora_", 1)
        if fmt == "diffusers":
            out[f"unet.{key}"] = value
            continue
        stem = "lora_unet_" + module.replace(".", "_")
        out[f"{stem}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        out[f"{stem}.alpha"] = torch.tensor(float(rank))
    md = {"loracle.base_model": BASE_MODEL_NAME, **metadata}
    if fmt == "kohya":
        md.update({"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank)})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=md)
    return path


def save_mar_lora(path: Path, peft_tensors: dict[str, torch.Tensor], rank: int, metadata: dict[str, str]) -> Path:
    """peft keys of a LoRA on the MAR ("encoder_blocks.0.attn.qkv.lora_A.weight", alpha = rank) -> a safetensors
    file with "transformer." keys (diffusers' prefix for transformer-based pipelines) and MAR metadata."""
    out = {f"transformer.{k}": v.contiguous() for k, v in sorted(peft_tensors.items())}
    md = {"loracle.base_model": MAR_MODEL_NAME, "loracle.family": "mar", "lora_rank": str(rank),
          "lora_alpha": str(rank), **metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=md)
    return path
