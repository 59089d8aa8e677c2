"""A MAR model folder on disk, safetensors + JSON only.

Layout (diffusers-like, so a text-conditioned MAR travels with its text encoder):
  loracle_model.json          {"family": "mar", "name": ..., "sampling": {default AR steps, cfg, temperature}}
  transformer/config.json     MARConfig
  transformer/model.safetensors
  text_encoder/, tokenizer/   transformers folders (only for cond="text")
  vae/                        diffusers AutoencoderKL folder (only for latent tokens, vae_stride > 1: KL-16)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from loracle.generation.mar.config import MARConfig
from loracle.generation.mar.model import MAR
from loracle.generation.mar.tokenizer import VAETokenizer

FAMILY = "mar"


@dataclass
class MARBundle:
    """What the MAR engine needs: the model, its text encoder and tokenizer (text condition), defaults, and the
    VAE tokenizer of a latent MAR (None: pixel tokens, the token grid is the image)."""

    name: str
    model: MAR
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    sampling: dict = field(default_factory=dict)
    vae: VAETokenizer | None = None

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def sample_size(self) -> int:
        return self.model.config.img_size

    def to_images(self, grid: torch.Tensor) -> torch.Tensor:
        """A sampled token grid (B, C, h, w) as images in [-1, 1] (decoded by the VAE for latent tokens)."""
        return grid if self.vae is None else self.vae.decode(grid)


def is_mar_folder(path: str | Path) -> bool:
    f = Path(path) / "loracle_model.json"
    return f.is_file() and json.loads(f.read_text()).get("family") == FAMILY


def save_mar(folder: str | Path, model: MAR, name: str, text_encoder=None, tokenizer=None,
             sampling: dict | None = None, vae=None) -> Path:
    """`vae`: a diffusers AutoencoderKL whose latent grid is the model's token grid (vae_stride > 1)."""
    folder = Path(folder)
    if (vae is None) != (model.config.vae_stride == 1):
        raise ValueError(f"MAR '{name}': vae_stride {model.config.vae_stride} "
                         f"{'needs' if vae is None else 'takes no'} VAE")
    if vae is not None:
        VAETokenizer(vae).check(model.config, f"MAR '{name}'")
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    (folder / "transformer" / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / "transformer" / "model.safetensors"))
    if text_encoder is not None:
        text_encoder.save_pretrained(folder / "text_encoder")
        tokenizer.save_pretrained(folder / "tokenizer")
    if vae is not None:
        vae.save_pretrained(folder / "vae", safe_serialization=True)
    meta = {"family": FAMILY, "name": name, "sampling": sampling or {}}
    (folder / "loracle_model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_mar(folder: str | Path, device: str | torch.device = "cpu") -> MARBundle:
    """Load a MAR folder written by `save_mar`; refuses anything that is not one, naming what is missing."""
    folder = Path(folder)
    if not is_mar_folder(folder):
        raise ValueError(f"'{folder}' is not a MAR model folder (no loracle_model.json with family 'mar')")
    meta = json.loads((folder / "loracle_model.json").read_text())
    weights = folder / "transformer" / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"MAR folder '{folder}' has no transformer/model.safetensors")
    config = MARConfig.from_dict(json.loads((folder / "transformer" / "config.json").read_text()))
    model = MAR(config)
    model.load_state_dict(load_file(str(weights)))
    model.to(device).eval().requires_grad_(False)
    te = tok = None
    if config.cond == "text":
        from transformers import CLIPTextModel, CLIPTokenizer

        te = CLIPTextModel.from_pretrained(folder / "text_encoder").to(device).eval().requires_grad_(False)
        tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        if tok.model_max_length != config.buffer_size or te.config.hidden_size != config.text_dim:
            raise ValueError(f"MAR folder '{folder}': text encoder ({tok.model_max_length} tokens x "
                             f"{te.config.hidden_size}) does not match buffer_size {config.buffer_size} x text_dim "
                             f"{config.text_dim}")
    vae = None
    if config.vae_stride > 1:
        if not (folder / "vae" / "config.json").is_file():
            raise ValueError(f"MAR folder '{folder}' samples latents (vae_stride {config.vae_stride}) but has no vae/")
        from diffusers import AutoencoderKL

        vae = VAETokenizer(AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True).to(device))
        vae.check(config, f"MAR folder '{folder}'")
    return MARBundle(meta.get("name", folder.name), model, te, tok, dict(meta.get("sampling", {})), vae)
