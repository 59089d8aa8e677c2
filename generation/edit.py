"""Image inputs for image-to-image and inpainting: checks, resizing, tensors, masks at latent resolution.

The loop (`generation.loop.denoise`) gets an `EditInputs`: the clean input in the model's latent space (the
VAE's, or the pixels themselves for pixel-space models), the repaint mask at latent resolution (1 = repaint,
0 = keep) and the strength. What the loop does with them follows diffusers' img2img and inpaint pipelines:
start at the timestep of the strength from the re-noised input, and (UNets with the usual input channels)
blend the re-noised known latents into the kept region after every step; dedicated inpainting UNets
(2C+1 input channels) get the mask and the masked-image latents as extra channels instead.

Feathering is a Gaussian blur of the pixel mask (`PIL.ImageFilter.GaussianBlur`, radius in pixels), applied
after resizing; an unfeathered mask is binarised at 0.5 like diffusers' `VaeImageProcessor.binarize`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from generation.models import BaseModel

MASK_MODES = ("1", "L", "RGB")


def edit_steps(strength: float, steps: int) -> int:
    """Denoising steps an edit runs: the last round(strength x steps) of the schedule."""
    return min(steps, int(round(strength * steps)))


def check_edit_inputs(image: Image.Image | None, mask: Image.Image | None, strength: float,
                      mask_feather: int) -> None:
    """ValueErrors naming what is wrong; nothing is silently fixed."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    if isinstance(mask_feather, bool) or not isinstance(mask_feather, int) or mask_feather < 0:
        raise ValueError(f"mask_feather must be an integer >= 0 (Gaussian blur radius in pixels), got {mask_feather!r}")
    if image is not None and not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image, got {type(image).__name__}")
    if mask is None:
        return
    if image is None:
        raise ValueError("a mask needs an input image: inpainting repaints part of a given image")
    if not isinstance(mask, Image.Image):
        raise ValueError(f"mask must be a PIL image, got {type(mask).__name__}")
    if mask.mode not in MASK_MODES:
        raise ValueError(f"mask must be a grayscale or RGB image (modes {', '.join(MASK_MODES)}; white = repaint), "
                         f"got mode {mask.mode!r}")
    if mask.size != image.size:
        raise ValueError(f"mask size {mask.size[0]}x{mask.size[1]} does not match image size "
                         f"{image.size[0]}x{image.size[1]}")


def load_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """Open an image file fully (so a truncated or non-image file fails here, with its name, not mid-run)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"{what} file {p} is not a readable image ({exc})") from None


def image_channels(model: BaseModel) -> int:
    """Channels of the model's images: the VAE's input, or (pixel space) the UNet's output."""
    if model.vae is not None:
        return int(model.vae.config.in_channels)
    return int(model.unet.config.out_channels)


def image_to_tensor(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
    """PIL -> (1, channels, height, width) float in [-1, 1] (resized with bicubic filtering if needed)."""
    im = image.convert("L" if channels == 1 else "RGB")
    if im.size != (width, height):
        im = im.resize((width, height), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def mask_to_tensor(mask: Image.Image, height: int, width: int, feather: int = 0) -> torch.Tensor:
    """PIL mask -> (1, 1, height, width) in [0, 1], 1 = repaint; binary unless feathered."""
    m = mask.convert("L")
    if m.size != (width, height):
        m = m.resize((width, height), Image.NEAREST)
    arr = (np.asarray(m, dtype=np.float32) / 255.0 >= 0.5).astype(np.float32)
    if feather:
        blurred = Image.fromarray((arr * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(feather))
        arr = np.asarray(blurred, dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None, None].contiguous()


def to_latent_mask(mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Pixel mask -> latent resolution: nearest for binary masks (as diffusers), area average when soft."""
    if scale_factor == 1:
        return mask
    size = (mask.shape[-2] // scale_factor, mask.shape[-1] // scale_factor)
    soft = bool(((mask > 0) & (mask < 1)).any())
    return F.interpolate(mask, size=size, mode="area" if soft else "nearest")


@torch.no_grad()
def encode_image(model: BaseModel, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> latents the loop works on (the VAE posterior's mean, scaled; identity in pixel space)."""
    if model.vae is None:
        return pixels.to(model.device, model.dtype)
    vae = model.vae
    x = pixels.to(model.device, next(vae.parameters()).dtype)
    z = vae.encode(x).latent_dist.mode()
    if getattr(vae.config, "shift_factor", None):
        z = z - vae.config.shift_factor
    return (z * vae.config.scaling_factor).to(model.dtype)


def is_inpainting_unet(model: BaseModel) -> bool:
    """A dedicated inpainting UNet takes latents + mask + masked-image latents (2C+1 input channels)."""
    return int(model.unet.config.in_channels) == 2 * model.latent_channels + 1


@dataclass
class EditInputs:
    """One request's image input, ready for the loop (batch 1; `expand` repeats it for a chunk)."""

    image_latents: torch.Tensor  # (1, C, h, w): the clean input in latent space
    strength: float
    mask: torch.Tensor | None = None  # (1, 1, h, w) at latent resolution, 1 = repaint
    masked_image_latents: torch.Tensor | None = None  # (1, C, h, w): for inpainting UNets only

    def expand(self, n: int) -> "EditInputs":
        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.expand(n, *t.shape[1:]).contiguous()

        return EditInputs(rep(self.image_latents), self.strength, rep(self.mask), rep(self.masked_image_latents))

    def extra_channels(self, idx: torch.Tensor) -> torch.Tensor:
        """The inpainting UNet's extra input for the samples `idx`: mask, then masked-image latents."""
        return torch.cat([self.mask[idx], self.masked_image_latents[idx]], dim=1)


def prepare_edit(model: BaseModel, image: Image.Image | None, mask: Image.Image | None, strength: float,
                 height: int, width: int, feather: int = 0) -> EditInputs | None:
    """Resize, convert and encode the request's image and mask. None when there is nothing to edit (plain
    text-to-image on a regular UNet). An inpainting UNet without an input image gets an empty canvas fully
    masked, so it can also generate from scratch (as diffusers' inpaint pipeline at strength 1)."""
    inpaint_unet = is_inpainting_unet(model)
    if image is None and not inpaint_unet:
        return None
    channels = image_channels(model)
    if image is None:
        pixels = torch.zeros(1, channels, height, width)
        pixel_mask = torch.ones(1, 1, height, width)
        strength = 1.0
    else:
        pixels = image_to_tensor(image, channels, height, width)
        pixel_mask = mask_to_tensor(mask, height, width, feather) if mask is not None else None
    latents = encode_image(model, pixels)
    latent_mask = masked = None
    if pixel_mask is not None or inpaint_unet:
        if pixel_mask is None:  # image-to-image on an inpainting UNet: everything may change
            pixel_mask = torch.ones(1, 1, height, width)
        latent_mask = to_latent_mask(pixel_mask, model.vae_scale_factor).to(model.device, model.dtype)
    if inpaint_unet:
        masked = encode_image(model, pixels * (pixel_mask < 0.5))
    return EditInputs(latents, float(strength), latent_mask, masked)
