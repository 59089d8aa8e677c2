"""A turn's input images (image-to-image, inpainting): the files a user names are checked before any work,
and uploaded ones are stored where the turn can read them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from loracle.agent.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import Image


def check_edit_files(image: Path | None, mask: Path | None) -> None:
    """InvalidInput (its field: 'image' or 'mask') unless both are readable images of one size; a mask needs an image."""
    from loracle.generation.edit import check_edit_inputs, load_image

    if mask is not None and image is None:
        raise InvalidInput("a mask needs an image (the picture whose white region is repainted)", field="mask")
    opened = {}
    for field, path in (("image", image), ("mask", mask)):
        if path is not None:
            try:
                opened[field] = load_image(path, field)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=field) from None
    if mask is not None:
        try:
            check_edit_inputs(opened["image"], opened["mask"], 0.0, 0)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="mask") from None


def store_upload(images_dir: Path, tenant: str, image: Image.Image, description: str) -> Path:
    """Store an uploaded input image as a PNG named by its content, in the tenant's uploads folder (the
    tenant name is hashed, so any name is one safe path segment); its path."""
    from loracle.tools.sample import store_png

    folder = images_dir / "uploads" / hashlib.sha256(tenant.encode()).hexdigest()[:24]
    return folder / store_png(image, description, folder)[0]
