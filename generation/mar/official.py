"""Official MAR checkpoints (LTH14/mar) and the KL-16 tokenizer, loaded safely; nothing is downloaded here.

MAR weights: the official `checkpoint-last.pth` is a pickle {"model", "model_ema", "optimizer", "epoch",
"scaler", "args"}. It is read with `torch.load(weights_only=True)` (only tensors and containers are built; the
saved `argparse.Namespace` is the one extra class allowed), or a `.safetensors` export of the state dict is read
directly. Key names map one to one onto `generation.mar.model.MAR` (same module names, timm's Block layout whose
q_norm / k_norm / ls / drop_path have no parameters), so the state dict loads strictly; the architecture is
inferred from tensor shapes and matched against SIZES (heads are not visible in weights; the widths 768 / 1024 /
1280 fix them). The EMA weights are used by default, as the official evaluation does.

KL-16 tokenizer (LTH14/mar models/vae.py, LDM's KL-VAE with embed_dim 16, ch_mult (1, 1, 2, 2, 4), 2 res
blocks, scale 0.2325): the decoder and post_quant_conv map onto diffusers' AutoencoderKL with `KL16_CONFIG`
(its up blocks have no attention, like MAR's decoder, attn_resolutions=()), via diffusers' LDM converter. The
encoder does not: MAR's encoder has two attention blocks in its last down level (attn_resolutions=(16,),
encoder.down.4.attn.0/1), which diffusers' DownEncoderBlock2D lacks. Sampling only decodes, so the decoder is
what MAR generation needs. Not here yet: the decoder key conversion itself (LDM names -> diffusers, e.g.
decoder.up.{i}.block.{j} -> decoder.up_blocks.{4-i}.resnets.{j}, mid.attn_1.q/k/v/proj_out 1x1 convs -> to_q/
to_k/to_v/to_out.0 linears; diffusers' convert_ldm_vae_checkpoint does this but also insists on the encoder
keys), and a test against the real kl16.ckpt, which cannot be downloaded here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from generation.mar.config import SIZES, MARConfig
from generation.mar.model import MAR
from generation.models import PICKLE_SUFFIXES, refuse_pickle

KL16_SCALE = 0.2325
KL16_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 128, 256, 256, 512], "down_block_types": ["DownEncoderBlock2D"] * 5,
    "up_block_types": ["UpDecoderBlock2D"] * 5, "act_fn": "silu", "sample_size": 256, "scaling_factor": KL16_SCALE,
}


def read_state_dict(path: str | Path, use_ema: bool = True, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of an official checkpoint (.pth, weights_only) or of a safetensors export; "module." stripped."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path, allow_pickle, "MAR checkpoint")
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        key = "model_ema" if use_ema and isinstance(obj, dict) and "model_ema" in obj else "model"
        sd = obj[key] if isinstance(obj, dict) and key in obj else obj
    else:
        raise ValueError(f"'{path}': expected a .safetensors or {', '.join(PICKLE_SUFFIXES)} MAR checkpoint")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"'{path}' holds no MAR state dict (expected tensors under 'model' / 'model_ema')")
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
    """diffusers' AutoencoderKL with MAR's KL-16 configuration (random weights: the tokenizer layout the official weights need; see the module docstring)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or KL16_CONFIG))
