"""The image a turn starts from: an upload (image-to-image, or inpainting with a mask) or, for a refinement
follow-up ("make it more X"), one of the previous turn's results."""

from __future__ import annotations

from PIL import Image

from loracle.agent.edits import refinement_source
from loracle.agent.plan import ImageEdit
from loracle.agent.settings import Settings
from loracle.agent.state import AgentState
from loracle.generation.edit import check_edit_inputs
from loracle.tools.image_store import ImageStore


def turn_image_edit(state: AgentState, settings: Settings, images: ImageStore, follow_up: bool) -> ImageEdit | None:
    """This turn's input image: an upload (with an optional mask) at the strength asked for or the settings'
    default, or the previous turn's first image (or the one the message names) at the edit strength. Paths are
    kept as given (relative to the images folder for the API's uploads), so no server folder reaches the plan."""
    strength = state.strength
    if state.input_image:
        image = images.open(state.input_image, "input image")
        mask = images.open(state.input_mask, "input mask") if state.input_mask else None
        default = settings.inpaint_strength if mask is not None else settings.edit_strength
        strength = default if strength is None else strength
        check_edit_inputs(image, mask, strength, settings.mask_feather)
        return ImageEdit(image=state.input_image, mask=state.input_mask or None, strength=strength)
    index = refinement_source(state.message, len(state.images)) if follow_up else None
    if index is None:
        return None
    strength = settings.edit_strength if strength is None else strength
    check_edit_inputs(None, None, strength, settings.mask_feather)
    previous = state.images[index]
    return ImageEdit(image=previous.path, strength=strength, source="previous", image_id=previous.id)


def edit_images(edit: ImageEdit | None, images: ImageStore) -> tuple[Image.Image | None, Image.Image | None]:
    """The input image and mask an edit names (None where it has none); relative paths are in the image store."""
    if edit is None:
        return None, None
    mask = images.open(edit.mask, "input mask") if edit.mask else None
    return images.open(edit.image, "input image"), mask
