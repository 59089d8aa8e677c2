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

from loracle.generation.base_models import BaseModel

MASK_MODES = ("1", "L", "RGB")


def edit_steps(strength: float, steps: int) -> int:
    """Denoising steps an edit runs: the last round(strength x steps) of the schedule."""
    return min(steps, int(round(strength * steps)))


ImageInput = Image.Image | list[Image.Image] | None


def _as_list(x: Image.Image | list[Image.Image]) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def check_edit_inputs(image: ImageInput, mask: ImageInput, strength: float, mask_feather: int,
                      n_images: int = 1) -> None:
    """ValueErrors naming what is wrong; nothing is silently fixed. `image` (and `mask`) is one PIL image for
    every output, or a list with one per output image (`n_images` of them); one mask may serve a list."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    if isinstance(mask_feather, bool) or not isinstance(mask_feather, int) or mask_feather < 0:
        raise ValueError(f"mask_feather must be an integer >= 0 (Gaussian blur radius in pixels), got {mask_feather!r}")
    if image is None:
        if mask is not None:
            raise ValueError("a mask needs an input image: inpainting repaints part of a given image")
        return
    images = _as_list(image)
    for what, given in (("input images", image), ("masks", mask)):
        if isinstance(given, (list, tuple)) and len(given) != n_images:
            raise ValueError(f"got {len(given)} {what} for {n_images} images (give one, or one per image)")
    for im in images:
        if not isinstance(im, Image.Image):
            raise ValueError(f"image must be a PIL image, got {type(im).__name__}")
    if mask is None:
        return
    masks = _as_list(mask)
    for i in range(max(len(images), len(masks))):
        im, m = images[min(i, len(images) - 1)], masks[min(i, len(masks) - 1)]
        if not isinstance(m, Image.Image):
            raise ValueError(f"mask must be a PIL image, got {type(m).__name__}")
        if m.mode not in MASK_MODES:
            raise ValueError(f"mask must be a grayscale or RGB image (modes {', '.join(MASK_MODES)}; white = repaint), "
                             f"got mode {m.mode!r}")
        if m.size != im.size:
            raise ValueError(f"mask size {m.size[0]}x{m.size[1]} does not match image size "
                             f"{im.size[0]}x{im.size[1]}")


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
    """One request's image inputs, ready for the loop: batch 1 (shared by every image) or one row per image."""

    image_latents: torch.Tensor  # (B, C, h, w): the clean input in latent space
    strength: float
    mask: torch.Tensor | None = None  # (B, 1, h, w) at latent resolution, 1 = repaint
    masked_image_latents: torch.Tensor | None = None  # (B, C, h, w): for inpainting UNets only

    def rows(self, indices: list[int]) -> EditInputs:
        """The inputs of the request's images `indices` (a shared input is repeated)."""
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if t.shape[0] == 1:
                return t.expand(len(indices), *t.shape[1:]).contiguous()
            return t[torch.tensor(indices, device=t.device)]

        return EditInputs(pick(self.image_latents), self.strength, pick(self.mask), pick(self.masked_image_latents))

    def extra_channels(self, idx: torch.Tensor) -> torch.Tensor:
        """The inpainting UNet's extra input for the samples `idx`: mask, then masked-image latents."""
        return torch.cat([self.mask[idx], self.masked_image_latents[idx]], dim=1)


def prepare_edit(model: BaseModel, image: ImageInput, mask: ImageInput, strength: float,
                 height: int, width: int, feather: int = 0) -> EditInputs | None:
    """Resize, convert and encode the request's image(s) and mask(s). None when there is nothing to edit
    (plain text-to-image on a regular UNet). An inpainting UNet without an input image gets an empty canvas
    fully masked, so it can also generate from scratch (as diffusers' inpaint pipeline at strength 1)."""
    inpaint_unet = is_inpainting_unet(model)
    if image is None and not inpaint_unet:
        return None
    channels = image_channels(model)
    if image is None:
        pixels = torch.zeros(1, channels, height, width)
        pixel_mask = torch.ones(1, 1, height, width)
        strength = 1.0
    else:
        pixels = torch.cat([image_to_tensor(im, channels, height, width) for im in _as_list(image)])
        pixel_mask = None
        if mask is not None:
            pixel_mask = torch.cat([mask_to_tensor(m, height, width, feather) for m in _as_list(mask)])
    latents = encode_image(model, pixels)
    latent_mask = masked = None
    if pixel_mask is not None or inpaint_unet:
        if pixel_mask is None:  # image-to-image on an inpainting UNet: everything may change
            pixel_mask = torch.ones(1, 1, height, width)
        latent_mask = to_latent_mask(pixel_mask, model.vae_scale_factor).to(model.device, model.dtype)
    if inpaint_unet:
        masked = encode_image(model, pixels * (pixel_mask < 0.5))
    return EditInputs(latents, float(strength), latent_mask, masked)
