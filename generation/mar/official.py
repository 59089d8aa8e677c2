"""Official MAR checkpoints (LTH14/mar) and the KL-16 tokenizer, loaded safely; nothing is downloaded here.

MAR weights: the official `checkpoint-last.pth` is a pickle {"model", "model_ema", "optimizer", "epoch",
"scaler", "args"}. It is read with `torch.load(weights_only=True)` (only tensors and containers are built; the
saved `argparse.Namespace` is the one extra class allowed), or a `.safetensors` export of the state dict is read
directly. Key names map one to one onto `generation.mar.model.MAR` (same module names, timm's Block layout whose
q_norm / k_norm / ls / drop_path have no parameters), so the state dict loads strictly; the architecture is
inferred from tensor shapes and matched against SIZES (heads are not visible in weights; the widths 768 / 1024 /
1280 fix them). The EMA weights are used by default, as the official evaluation does.

KL-16 tokenizer (LTH14/mar models/vae.py: LDM's KL-VAE with embed_dim 16, ch 128, ch_mult (1, 1, 2, 2, 4), 2 res
blocks, scale 0.2325). Checked against that source: the encoder has attn_resolutions=(16,), so its last level
(16x16) holds two attention blocks (encoder.down.4.attn.0/1, each after a res block); the decoder has
attn_resolutions=(), no level attention; both have mid-block attention. `KL16_CONFIG` is that layout in diffusers
terms (AttnDownEncoderBlock2D for the last down level). `load_kl16` reads kl16.ckpt ("model" or top level;
weights_only, allow_pickle=True) or a safetensors export and converts names with diffusers'
convert_ldm_vae_checkpoint plus one rule for level attention; loading is strict (every key of the file maps,
every weight of the model is filled, else the error lists them). `save_official` writes both checkpoints as one
MAR folder (safetensors + JSON) that `generation.mar.io.load_mar` and `MAREngine` use: tokens (B, 256, 16) ->
latents (B, 16, 16, 16) / 0.2325 -> VAE decode -> images. Tested on tiny layouts against an independent
LDM-named reference (same outputs to 1e-5) and, names and shapes only, on the full KL-16 layout; not tested on
the real kl16.ckpt or MAR weights, which cannot be downloaded here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from loracle.generation.base_models import PICKLE_SUFFIXES, refuse_pickle
from loracle.generation.mar.config import SIZES, MARConfig
from loracle.generation.mar.model import MAR

KL16_SCALE = 0.2325
KL16_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 128, 256, 256, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],  # encoder attn_resolutions=(16,)
    "up_block_types": ["UpDecoderBlock2D"] * 5, "act_fn": "silu", "sample_size": 256, "scaling_factor": KL16_SCALE,
}


def read_state_dict(path: str | Path, use_ema: bool = True, allow_pickle: bool = False,
                    what: str = "MAR checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of an official checkpoint (.pth / .ckpt, weights_only) or of a safetensors export: the state dict
    under "model_ema" (use_ema) or "model", else the top level; "module." stripped."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path, allow_pickle, what)
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        key = "model_ema" if use_ema and isinstance(obj, dict) and "model_ema" in obj else "model"
        sd = obj[key] if isinstance(obj, dict) and key in obj else obj
    else:
        raise ValueError(f"'{path}': expected a .safetensors or {', '.join(PICKLE_SUFFIXES)} {what}")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"'{path}' holds no {what} state dict (expected tensors under 'model' / 'model_ema')")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def config_from_state_dict(sd: dict[str, torch.Tensor], img_size: int = 256, vae_stride: int = 16) -> MARConfig:
    """The architecture a state dict was saved from (official ImageNet layout: class condition, KL-16 tokens)."""
    need = ("z_proj.weight", "decoder_embed.weight", "diffloss.net.input_proj.weight", "encoder_pos_embed_learned",
            "diffloss.net.final_layer.linear.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not a MAR state dict: missing {missing}")
    enc_dim, token_dim = sd["z_proj.weight"].shape
    dec_dim = sd["decoder_embed.weight"].shape[0]
    depth = lambda prefix: 1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}\.(\d+)\.", k)))  # noqa: E731
    seq_len = (img_size // vae_stride) ** 2
    patch = int(round((token_dim / 16) ** 0.5)) if token_dim % 16 == 0 else 1
    channels = token_dim // patch**2
    buffer = sd["encoder_pos_embed_learned"].shape[1] - seq_len // patch**2
    heads = {c.encoder_embed_dim: c.encoder_num_heads for c in SIZES.values() if c.vae_stride == 16}
    if enc_dim not in heads:
        raise ValueError(f"encoder width {enc_dim} is none of the official sizes ({sorted(heads)}); pass a MARConfig")
    return MARConfig(
        img_size=img_size, vae_stride=vae_stride, patch_size=patch, channels=channels, cond="class",
        class_num=sd["class_emb.weight"].shape[0], buffer_size=buffer, encoder_embed_dim=enc_dim,
        encoder_depth=depth("encoder_blocks"), encoder_num_heads=heads[enc_dim], decoder_embed_dim=dec_dim,
        decoder_depth=depth("decoder_blocks"), decoder_num_heads=heads.get(dec_dim, heads[enc_dim]),
        diffloss_d=depth("diffloss.net.res_blocks"), diffloss_w=sd["diffloss.net.input_proj.weight"].shape[0],
        learn_sigma=sd["diffloss.net.final_layer.linear.weight"].shape[0] == 2 * token_dim,
        attn_dropout=0.1, proj_dropout=0.1,
    )


def load_official_mar(path: str | Path, config: MARConfig | None = None, use_ema: bool = True,
                      allow_pickle: bool = False) -> MAR:
    """An official MAR checkpoint as a `MAR` (eval mode); strict: every key must match, or the error lists them.
    A .pth needs allow_pickle=True (it is still read with weights_only=True)."""
    sd = read_state_dict(path, use_ema, allow_pickle)
    config = config or config_from_state_dict(sd)
    model = MAR(config)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"'{path}' does not fit {config}: missing {result.missing_keys[:5]}, unexpected "
                         f"{result.unexpected_keys[:5]}")
    return model.eval().requires_grad_(False)


def kl16_vae(config: dict | None = None):
    """diffusers' AutoencoderKL with MAR's KL-16 layout (random weights; `load_kl16` fills in the official ones)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or KL16_CONFIG))


# Attention inside a down / up level (LDM's attn_resolutions), which diffusers' LDM converter does not map.
_LEVEL_ATTN = re.compile(r"^(encoder\.down|decoder\.up)\.(\d+)\.attn\.(\d+)\.")


def _convert_ldm_vae(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers' convert_ldm_vae_checkpoint, plus one rule for level attention: encoder.down.{i}.attn.{j} ->
    encoder.down_blocks.{i}.attentions.{j}; decoder.up.{i}.attn.{j} -> decoder.up_blocks.{n-1-i}.attentions.{j}
    (LDM counts up levels from the highest resolution, diffusers from the lowest); q/k/v/proj_out as in mid_block."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, update_vae_attentions_ldm_to_diffusers

    level = {k for k in sd if _LEVEL_ATTN.match(k)}
    out = convert_ldm_vae_checkpoint({k: v for k, v in sd.items() if k not in level}, config)
    groups: dict[str, list[str]] = {}
    for k in sorted(level):
        groups.setdefault(_LEVEL_ATTN.match(k).group(0), []).append(k)
    n_up = len(config["up_block_types"])
    for old, keys in groups.items():
        side, i, j = _LEVEL_ATTN.match(old).groups()
        new = (f"encoder.down_blocks.{i}.attentions.{j}." if side == "encoder.down"
               else f"decoder.up_blocks.{n_up - 1 - int(i)}.attentions.{j}.")
        update_vae_attentions_ldm_to_diffusers(keys, out, sd, {"old": old, "new": new})
    return out


def load_ldm_vae(vae, sd: dict[str, torch.Tensor], where: str = "state dict"):
    """Fill a diffusers AutoencoderKL from an LDM KL-VAE state dict, strictly: a key of the file that maps
    nowhere, or a weight of the model that gets nothing, is an error naming them. LDM's training-only `loss.*`
    weights (LPIPS, discriminator) are skipped."""
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    # Which source keys the converter uses: convert one-element markers holding each key's index.
    markers = {k: torch.full((1,) * v.ndim, i) for i, (k, v) in enumerate(sd.items())}
    used = {int(v.flatten()[0]) for v in _convert_ldm_vae(markers, vae.config).values()}
    unused = [k for i, k in enumerate(sd) if i not in used]
    converted = _convert_ldm_vae(sd, vae.config)
    try:
        result = vae.load_state_dict(converted, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"'{where}' does not fit the VAE config: {' '.join(str(e).split())}") from None
    unexpected = unused + result.unexpected_keys
    if result.missing_keys or unexpected:
        raise ValueError(f"'{where}' is not an LDM KL-VAE of this layout: {len(result.missing_keys)} missing "
                         f"(diffusers names) {result.missing_keys[:8]}, {len(unexpected)} unexpected {unexpected[:8]}")
    return vae.eval().requires_grad_(False)


def load_kl16(path: str | Path, config: dict | None = None, allow_pickle: bool = False):
    """MAR's KL-16 tokenizer (LTH14/mar pretrained_models/vae/kl16.ckpt, or a safetensors export of its state
    dict) as a diffusers AutoencoderKL; a .ckpt needs allow_pickle=True and is read with weights_only=True."""
    sd = read_state_dict(path, use_ema=False, allow_pickle=allow_pickle, what="KL-16 VAE checkpoint")
    return load_ldm_vae(kl16_vae(config), sd, str(path))


def save_official(mar_path: str | Path, vae_path: str | Path, folder: str | Path, name: str | None = None,
                  allow_pickle: bool = False, use_ema: bool = True, config: MARConfig | None = None,
                  vae_config: dict | None = None) -> Path:
    """An official MAR checkpoint and its KL-16 tokenizer as a loracle MAR folder (safetensors + JSON only), so
    later loads (`generation.mar.io.load_mar`) never unpickle anything. Defaults as LTH14/mar's evaluation;
    `config` / `vae_config` only for layouts other than the official ones (None: inferred / KL16_CONFIG)."""
    from loracle.generation.mar.io import save_mar

    model = load_official_mar(mar_path, config, use_ema=use_ema, allow_pickle=allow_pickle)
    vae = load_kl16(vae_path, vae_config, allow_pickle=allow_pickle)
    return save_mar(folder, model, name or Path(mar_path).stem, vae=vae,
                    sampling={"temperature": 1.0, "clip_x0": False})
