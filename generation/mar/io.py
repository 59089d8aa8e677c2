"""A MAR model folder on disk, safetensors + JSON only.

Layout (diffusers-like, so a text-conditioned MAR travels with its text encoder):
  loracle_model.json          {"family": "mar", "name": ..., "sampling": {default AR steps, cfg, temperature}}
  transformer/config.json     MARConfig
  transformer/model.safetensors
  text_encoder/, tokenizer/   transformers folders (only for cond="text")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from generation.mar.config import MARConfig
from generation.mar.model import MAR

FAMILY = "mar"


@dataclass
class MARBundle:
    """What the MAR engine needs: the model, its text encoder and tokenizer (text condition), defaults."""

    name: str
    model: MAR
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    sampling: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def sample_size(self) -> int:
        return self.model.config.img_size


def is_mar_folder(path: str | Path) -> bool:
    f = Path(path) / "loracle_model.json"
    return f.is_file() and json.loads(f.read_text()).get("family") == FAMILY


def save_mar(folder: str | Path, model: MAR, name: str, text_encoder=None, tokenizer=None,
             sampling: dict | None = None) -> Path:
    folder = Path(folder)
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    (folder / "transformer" / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / "transformer" / "model.safetensors"))
    if text_encoder is not None:
        text_encoder.save_pretrained(folder / "text_encoder")
        tokenizer.save_pretrained(folder / "tokenizer")
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
    return MARBundle(meta.get("name", folder.name), model, te, tok, dict(meta.get("sampling", {})))
