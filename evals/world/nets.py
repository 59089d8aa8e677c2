"""Architectures of the world's models: a pixel-space UNet2DConditionModel and a tiny CLIP text encoder.

Same classes as Stable Diffusion 1.5 (so `generation/` loads and samples them like any SD 1.5 folder), only
small: 16x16 single-channel images, cross-attention only at 4x4 (attention at 8x8 tripled the cost on CPU),
plus diffusers' "text" addition embedding, which pools the prompt into the time embedding so every resnet
sees it (the cheap equivalent of a class embedding), and a 2-layer text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loracle.evals.world.data import SIZE
from loracle.evals.world.tokenizer import MAX_LENGTH


@dataclass(frozen=True)
class NetSize:
    """Width of one model; the guide uses the same layout, narrower."""

    channels: tuple[int, int, int] = (32, 48, 64)
    text_dim: int = 64
    text_layers: int = 2
    heads: int = 4


BASE_SIZE = NetSize()
GUIDE_SIZE = NetSize(channels=(16, 24, 32), text_dim=32, text_layers=1, heads=2)


def build_unet(size: NetSize):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=size.channels, norm_num_groups=8, cross_attention_dim=size.text_dim,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=size.heads, addition_embed_type="text", addition_embed_type_num_heads=size.heads,
    )


def build_text_encoder(size: NetSize, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=size.text_dim, intermediate_size=size.text_dim * 2,
        num_hidden_layers=size.text_layers, num_attention_heads=size.heads, max_position_embeddings=MAX_LENGTH,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=size.text_dim, hidden_act="gelu",
    )
    return CLIPTextModel(cfg)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
