"""A KL-VAE as MAR's tokenizer: images <-> the latent grid that MAR patchifies into tokens.

Pixel-space MARs (vae_stride 1, the digits world) have no tokenizer: their token grid is the image. A latent
MAR (the official ImageNet models: vae_stride 16, 16 channels) samples scaled KL-16 latents, as LTH14/mar does:
training encodes `posterior.sample() * 0.2325`, sampling decodes `vae.decode(tokens / 0.2325)`. The scale is the
diffusers config's `scaling_factor`, so it travels with the VAE folder.
"""

from __future__ import annotations

import torch

from loracle.generation.mar.config import MARConfig


class VAETokenizer:
    """Images in [-1, 1] (B, 3, H, W) <-> tokens (B, C, H / stride, W / stride), C = the VAE's latent channels."""

    def __init__(self, vae):
        self.vae = vae.eval().requires_grad_(False)

    @property
    def scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def check(self, config: MARConfig, where: str = "MAR") -> None:
        """A MAR's token grid must be this VAE's latent grid; refuse a mismatch before sampling anything."""
        if (config.vae_stride, config.channels) != (self.stride, self.channels):
            raise ValueError(f"{where}: vae_stride {config.vae_stride} x {config.channels} channels does not fit the "
                             f"VAE (stride {self.stride}, {self.channels} latent channels)")

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents: the posterior's mean, or a sample with `generator` (training draws samples)."""
        p = next(self.vae.parameters())
        dist = self.vae.encode(images.to(p.device, p.dtype)).latent_dist
        z = dist.sample(generator) if generator is not None else dist.mode()
        return z * self.scale

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images in about [-1, 1] (the caller clamps, as `generation.loop.decode_pixels` does)."""
        p = next(self.vae.parameters())
        return self.vae.decode(tokens.to(p.device, p.dtype) / self.scale).sample
