"""Input images for edits: check an uploaded file, a data URL or a link to the tenant's own image, turn an
OpenAI mask (transparent = edit) into loracle's (white = repaint), and store both as PNG files under the
tenant's uploads folder, named by content hash (never by the client's file name).

Everything a client can get wrong here is an `ApiError(400)` naming the field and the reason.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image

from loracle.agent.inputs import store_upload
from loracle.api.config import ApiConfig
from loracle.api.errors import ApiError

if TYPE_CHECKING:
    from loracle.agent.service import Agent

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp"}
DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*?)(?P<b64>;base64)?,", re.I)
OWN_FILE = re.compile(r"^/v1/images/files/(?P<id>[0-9A-Fa-f-]{32,36})\.png$")


@dataclass(frozen=True)
class EditInput:
    """What a turn edits: the stored image (and mask) and how far to move from it (None: the agent's default,
    `LORACLE_EDIT_STRENGTH`, or `LORACLE_INPAINT_STRENGTH` with a mask)."""

    image: str
    mask: str | None
    strength: float | None

    def turn(self) -> dict[str, Any]:
        """The graph turn's keys (agent/state.TurnInput), as `Agent.run_turn` keywords."""
        return {"input_image": self.image, "input_mask": self.mask, "strength": self.strength}


def check_strength(strength: float | None, param: str = "strength") -> float | None:
    if strength is None:
        return None
    if not 0.0 <= strength <= 1.0:  # also false for NaN
        raise ApiError(400, f"{param} must be between 0 and 1, got {strength}", code="invalid_strength", param=param)
    return float(strength)


def decode(data: bytes, config: ApiConfig, param: str) -> Image.Image:
    """The decoded image, or 400 for an empty, too large, unknown, unsupported, too big or damaged file."""
    if not data:
        raise ApiError(400, f"{param} is empty", code="invalid_image", param=param)
    if len(data) > config.max_upload_bytes:
        raise ApiError(400, f"{param} is {len(data)} bytes; the limit is {config.max_upload_bytes}",
                       code="image_too_large", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ApiError(400, f"{param} has too many pixels; the limit is {config.max_image_pixels}",
                       code="image_too_large", param=param) from None
    except (OSError, SyntaxError, ValueError, EOFError):  # UnidentifiedImageError is an OSError
        raise ApiError(400, f"{param} is not an image (send a PNG, JPEG or WebP file)", code="invalid_image",
                       param=param) from None
    if image.format not in FORMATS:
        raise ApiError(400, f"{param} is a {image.format} image; send PNG, JPEG or WebP", code="unsupported_image_type",
                       param=param)
    width, height = image.size
    if width * height > config.max_image_pixels:
        raise ApiError(400, f"{param} is {width}x{height} = {width * height} pixels; the limit is "
                            f"{config.max_image_pixels}", code="image_too_large", param=param)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApiError(400, f"{param} could not be decoded (truncated or damaged {image.format}: {exc})",
                       code="invalid_image", param=param) from None
    return image


def internal_mask(mask: Image.Image) -> Image.Image:
    """OpenAI's mask, where fully transparent pixels mark the edit, as loracle's L mask (255 = repaint).

    A mask with no transparency at all (no alpha, or alpha opaque everywhere, as editors often save it)
    is read as black and white instead: white (>= 128) is repainted.
    """
    has_alpha = mask.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in mask.info
    if has_alpha:
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda a: 255 if a == 0 else 0)
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def prepare(image_data: bytes, mask_data: bytes | None, strength: float | None, *, config: ApiConfig, native: int,
            agent: Agent, tenant: str, image_param: str = "image", strength_param: str = "strength") -> EditInput:
    """Check the image (and mask), bring them to the model's native size, store them; the turn's edit input."""
    strength = check_strength(strength, param=strength_param)
    image = decode(image_data, config, image_param)
    if image.width != image.height:
        raise ApiError(400, f"{image_param} is {image.width}x{image.height}; it must be square (the base model makes "
                            f"{native}x{native} images)", code="invalid_image_size", param=image_param)
    mask = None
    if mask_data is not None:
        mask = decode(mask_data, config, "mask")
        if mask.size != image.size:
            raise ApiError(400, f"mask is {mask.width}x{mask.height} but image is {image.width}x{image.height}; they "
                                "must be the same size", code="mask_size_mismatch", param="mask")
        mask = internal_mask(mask)
    rgb = image.convert("RGB")
    if rgb.size != (native, native):
        rgb = rgb.resize((native, native), Image.Resampling.LANCZOS)
        mask = mask.resize((native, native), Image.Resampling.NEAREST) if mask is not None else None
    # names in the image store, never server folders: the paths end up in the plan, which clients read
    image_path = store_upload(agent, tenant, rgb, "loracle input image")
    mask_path = None if mask is None else store_upload(agent, tenant, mask, "loracle input mask (white = repaint)")
    return EditInput(image_path, mask_path, strength)


def data_url_bytes(url: str, config: ApiConfig, param: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL (400 for anything else)."""
    match = DATA_URL.match(url[:512])
    if match is None:
        raise ApiError(400, f"{param} is not a valid data URL (expected data:image/png;base64,...)",
                       code="invalid_image_url", param=param)
    mime = match["mime"].lower()
    if mime not in set(FORMATS.values()) | {"image/jpg"}:
        raise ApiError(400, f"{param} has type {mime or 'none'!r}; send image/png, image/jpeg or image/webp",
                       code="unsupported_image_type", param=param)
    if not match["b64"]:
        raise ApiError(400, f"{param} must be base64-encoded (data:{mime};base64,...)", code="invalid_image_url",
                       param=param)
    payload = url[match.end():]
    if len(payload) * 3 // 4 > config.max_upload_bytes + 2:
        raise ApiError(400, f"{param} holds about {len(payload) * 3 // 4} bytes; the limit is "
                            f"{config.max_upload_bytes}", code="image_too_large", param=param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param} is not valid base64", code="invalid_image_url", param=param) from None


def own_image_id(url: str, hosts: set[str], param: str) -> str:
    """The image id in a link to this service's own image files; 400 for any other URL (never fetched)."""
    parts = urlsplit(url)
    match = OWN_FILE.match(parts.path)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in hosts or match is None:
        raise ApiError(400, f"{param}: loracle does not fetch external URLs; send a data URL "
                            "(data:image/png;base64,...) or a link to one of your own loracle images",
                       code="unsupported_image_url", param=param)
    return match["id"]
