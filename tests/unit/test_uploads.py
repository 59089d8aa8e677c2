"""api/uploads without a server: OpenAI masks to loracle's, data URLs, own-image links, strength bounds."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from loracle.api.config import ApiConfig
from loracle.api.errors import ApiError
from loracle.api.uploads import check_strength, data_url_bytes, internal_mask, own_image_id

IMAGE_ID = "0f8c3a52-7d1e-4c9b-9f44-2b6a1d3e5c70"


def rgba(alpha: np.ndarray, value: int = 0) -> Image.Image:
    rgb = np.full((*alpha.shape, 3), value, dtype=np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA")


def test_transparent_pixels_are_repainted_and_semi_transparent_ones_kept() -> None:
    alpha = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    assert np.asarray(internal_mask(rgba(alpha))).tolist() == [[255, 0, 0, 0]]


def test_an_opaque_alpha_channel_falls_back_to_white_for_repaint() -> None:
    mask = rgba(np.full((1, 2), 255, dtype=np.uint8), value=255)
    mask.putpixel((1, 0), (0, 0, 0, 255))
    assert np.asarray(internal_mask(mask)).tolist() == [[255, 0]]


def test_a_palette_mask_with_a_transparent_index_uses_it() -> None:
    mask = Image.new("P", (2, 1), 0)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.putpixel((1, 0), 1)
    mask.info["transparency"] = 1
    assert np.asarray(internal_mask(mask)).tolist() == [[0, 255]]


def test_strength_bounds_and_no_default_of_its_own() -> None:
    assert check_strength(None) is None  # the agent's settings decide
    assert check_strength(0.0) == 0.0 and check_strength(1.0) == 1.0
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ApiError, match="between 0 and 1"):
            check_strength(bad)


def test_data_urls() -> None:
    config = ApiConfig(max_upload_bytes=1024)
    assert data_url_bytes("data:image/png;base64," + base64.b64encode(b"abc").decode(), config, "u") == b"abc"
    assert data_url_bytes("DATA:image/JPEG;name=x.jpg;base64,YWJj", config, "u") == b"abc"
    with pytest.raises(ApiError, match="limit is 1024"):
        data_url_bytes("data:image/webp;base64," + "A" * 2000, config, "u")
    for url, words in [("data:image/svg+xml;base64,YWJj", "svg"), ("data:image/png;base64,YW=Jj", "base64"),
                       ("data:image/png,abc", "base64"), ("data:", "data URL")]:
        with pytest.raises(ApiError, match=words):
            data_url_bytes(url, config, "u")


def test_only_links_to_this_services_image_files_are_accepted() -> None:
    hosts = {"127.0.0.1:8000"}
    assert own_image_id(f"http://127.0.0.1:8000/v1/images/files/{IMAGE_ID}.png?sig=abc", hosts, "u") == IMAGE_ID
    for url in (f"http://evil.example/v1/images/files/{IMAGE_ID}.png", f"ftp://127.0.0.1:8000/v1/images/files/{IMAGE_ID}.png",
                "http://127.0.0.1:8000/v1/images/files/../../etc/passwd", "http://127.0.0.1:8000/admin",
                f"http://user@127.0.0.1:8000/v1/images/files/{IMAGE_ID}.png"):
        with pytest.raises(ApiError, match="external URLs") as caught:
            own_image_id(url, hosts, "u")
        assert caught.value.status == 400
