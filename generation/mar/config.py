"""MAR sizes as one validated dataclass, from a CPU-sized tiny model to the paper's B/L/H."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class MARConfig:
    """Everything that fixes the architecture (saved next to the weights as JSON).

    `cond`: "class" (an embedding per label, as in the paper) or "text" (each buffer token is a projected
    text-encoder state, so `buffer_size` must equal the text length). `token_dim` is channels x patch^2 of
    the tokens (pixels for the digits world, KL-16 latents for real checkpoints). `learn_sigma` follows the
    official head (2x output channels, learned-range variance, trained with guided-diffusion's mse + vb loss).
    """

    img_size: int = 16
    patch_size: int = 2
    channels: int = 1
    vae_stride: int = 1  # 1 = pixel space; 16 for the KL-16 tokenizer
    cond: Literal["class", "text"] = "class"
    class_num: int = 10
    text_dim: int = 0
    buffer_size: int = 4
    encoder_embed_dim: int = 64
    encoder_depth: int = 2
    encoder_num_heads: int = 4
    decoder_embed_dim: int = 64
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    attn_dropout: float = 0.0
    proj_dropout: float = 0.0
    diffloss_d: int = 3
    diffloss_w: int = 128
    learn_sigma: bool = False
    num_sampling_steps: int = 100
    diffusion_batch_mul: int = 4
    label_drop_prob: float = 0.1
    mask_ratio_min: float = 0.7

    def __post_init__(self) -> None:
        if self.cond not in ("class", "text"):
            raise ValueError(f"cond must be 'class' or 'text', got {self.cond!r}")
        grid = self.img_size // self.vae_stride
        if self.img_size % self.vae_stride or grid % self.patch_size:
            raise ValueError(f"img_size {self.img_size} / vae_stride {self.vae_stride} must be a multiple of "
                             f"patch_size {self.patch_size}")
        for name in ("encoder", "decoder"):
            dim, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if dim % heads:
                raise ValueError(f"{name}_embed_dim {dim} must be divisible by {name}_num_heads {heads}")
        positive = ("patch_size", "channels", "buffer_size", "encoder_depth", "decoder_depth", "diffloss_d",
                    "diffloss_w", "num_sampling_steps", "diffusion_batch_mul")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_sampling_steps > 1000:
            raise ValueError(f"num_sampling_steps must be <= 1000 (the training steps), got {self.num_sampling_steps}")
        if self.cond == "text" and self.text_dim < 1:
            raise ValueError("cond='text' needs text_dim >= 1 (the text encoder's hidden size)")
        if not (0.0 <= self.label_drop_prob < 1.0):
            raise ValueError(f"label_drop_prob must be in [0, 1), got {self.label_drop_prob}")
        if not (0.0 < self.mask_ratio_min < 1.0):
            raise ValueError(f"mask_ratio_min must be in (0, 1), got {self.mask_ratio_min}")

    @property
    def seq_len(self) -> int:
        return (self.img_size // self.vae_stride // self.patch_size) ** 2

    @property
    def token_dim(self) -> int:
        return self.channels * self.patch_size ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MARConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MAR config keys: {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> MARConfig:
        return replace(self, **changes)


# The paper's ImageNet-256 models (KL-16 tokens, 16 channels, patch 1, 64 buffer tokens, 1000 classes); the
# widths and depths are those of LTH14/mar's mar_base / mar_large / mar_huge (208M / 479M / 943M parameters).
_IMAGENET = dict(img_size=256, patch_size=1, channels=16, vae_stride=16, cond="class", class_num=1000,
                 buffer_size=64, attn_dropout=0.1, proj_dropout=0.1, learn_sigma=True)
SIZES: dict[str, MARConfig] = {
    "tiny": MARConfig(),
    "base": MARConfig(**_IMAGENET, encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                      decoder_embed_dim=768, decoder_depth=12, decoder_num_heads=12, diffloss_d=6, diffloss_w=1024),
    "large": MARConfig(**_IMAGENET, encoder_embed_dim=1024, encoder_depth=16, encoder_num_heads=16,
                       decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16, diffloss_d=8, diffloss_w=1280),
    "huge": MARConfig(**_IMAGENET, encoder_embed_dim=1280, encoder_depth=20, encoder_num_heads=16,
                      decoder_embed_dim=1280, decoder_depth=20, decoder_num_heads=16, diffloss_d=12, diffloss_w=1536),
}
