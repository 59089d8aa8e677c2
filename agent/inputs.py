"""A turn's input images (image-to-image, inpainting): the files a user names are checked before any work,
and uploaded ones are stored where the turn can read them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loracle.agent.errors import InvalidInput, agent_errors

if TYPE_CHECKING:
    from PIL import Image

    from loracle.agent.service import Agent


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


def store_upload(agent: Agent, tenant: str, image: Image.Image, description: str) -> str:
    """Store an uploaded input image as a PNG named by its content, among the tenant's uploads in the image
    store; its path there (what a turn's `input_image` names)."""
    with agent_errors():
        return agent.images.put_upload(tenant, image, description)
