"""Image edits through the official `openai` client against a real uvicorn server (tiny model, 32x32):
`images.edit` with and without a mask, images in chat messages, and a clear 400 for every bad upload."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database

NATIVE = 32
MAX_UPLOAD = 16 * 1024
MAX_PIXELS = 128 * 128


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("api-edits"), url, embedder)
        config = ApiConfig(max_n=2, max_steps=8, max_body_bytes=8 * 1024, max_upload_bytes=MAX_UPLOAD,
                           max_image_pixels=MAX_PIXELS)
        with LiveServer(settings, config) as server:
            server.keys = {name: create_key(url, name) for name in ("alice", "bob")}
            yield server


def client_for(live, name: str = "alice") -> OpenAI:
    return OpenAI(base_url=f"{live.url}/v1", api_key=live.keys[name], max_retries=0, timeout=120)


@pytest.fixture
def client(live) -> OpenAI:
    return client_for(live)


def png(size: int | tuple[int, int] = NATIVE, color=(200, 40, 40), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    image = Image.new(mode, (size, size) if isinstance(size, int) else size, color)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise_png(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def openai_mask(size: int = NATIVE) -> bytes:
    """OpenAI's convention: the left half fully transparent (edit it), the right half opaque (keep it)."""
    alpha = np.full((size, size), 255, dtype=np.uint8)
    alpha[:, : size // 2] = 0
    rgba = np.dstack([np.zeros((size, size, 3), dtype=np.uint8), alpha])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def last_edit(live, tenant: str = "alice") -> dict:
    """The edit the tenant's latest run recorded in its plan (image, mask, strength): what the API passed in."""
    with live.service.agent.db.connection() as conn:
        plan = conn.execute("SELECT plan FROM runs WHERE tenant = %s ORDER BY created_at DESC LIMIT 1",
                            (tenant,)).fetchone()[0]
    edit = plan["edit"]
    for key in ("image", "mask"):  # the plan names uploads inside the images folder, never by a server path
        if edit[key] is not None:
            assert not Path(edit[key]).is_absolute(), edit[key]
            edit[key] = str(live.service.settings.images_dir / edit[key])
    return edit


def test_edit_with_an_openai_mask_returns_native_images_and_passes_the_turn_keys(live, client) -> None:
    result = client.images.edit(image=("fox.png", png(), "image/png"), mask=("mask.png", openai_mask(), "image/png"),
                                prompt="a red fox in a watercolor style", response_format="b64_json", n=2)
    assert len(result.data) == 2
    for item in result.data:
        with Image.open(io.BytesIO(base64.b64decode(item.b64_json))) as out:
            assert out.format == "PNG" and out.size == (NATIVE, NATIVE)
    edit = last_edit(live)
    image, mask = Path(edit["image"]), Path(edit["mask"])
    uploads = live.service.settings.images_dir / "uploads"
    assert image.is_relative_to(uploads) and mask.is_relative_to(uploads) and "fox" not in str(image)
    assert edit["source"] == "upload" and edit["strength"] == live.service.settings.inpaint_strength
    with Image.open(image) as stored:
        assert stored.mode == "RGB" and stored.getpixel((5, 5)) == (200, 40, 40)
    with Image.open(mask) as stored:  # transparent = edit became white = repaint
        values = np.asarray(stored)
        assert stored.mode == "L" and (values[:, : NATIVE // 2] == 255).all() and (values[:, NATIVE // 2:] == 0).all()


def test_edit_without_a_mask_as_urls_with_a_list_a_jpeg_and_a_resize(live, client) -> None:
    result = client.images.edit(image=[("a.jpg", png(64, fmt="JPEG"), "image/jpeg")], prompt="an oil painting",
                                response_format="url", extra_body={"strength": 0.4, "seed": 3})
    assert len(result.data) == 1
    response = httpx.get(result.data[0].url)
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as out:
        assert out.size == (NATIVE, NATIVE)
    edit = last_edit(live)
    assert edit["mask"] is None and edit["strength"] == 0.4
    with Image.open(edit["image"]) as stored:
        assert stored.size == (NATIVE, NATIVE)  # a square input is brought to the model's size
    default = client.images.edit(image=("a.png", png(), "image/png"), prompt="a fox")
    assert default.data[0].url and last_edit(live)["strength"] == live.service.settings.edit_strength


def test_a_mask_without_alpha_is_white_for_repaint(live, client) -> None:
    mask = np.zeros((NATIVE, NATIVE), dtype=np.uint8)
    mask[:8] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask, "L").save(buffer, format="PNG")
    client.images.edit(image=("a.png", png(), "image/png"), mask=("m.png", buffer.getvalue(), "image/png"), prompt="a fox")
    with Image.open(last_edit(live)["mask"]) as stored:
        assert (np.asarray(stored) == mask).all()


def test_chat_with_a_data_url_image_runs_as_an_edit(live, client) -> None:
    content = [{"type": "text", "text": "make it a watercolor"},
               {"type": "image_url", "image_url": {"url": data_url(png(color=(10, 200, 10)))}}]
    reply = client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": content}],
                                           metadata={"strength": "0.6"})
    assert "thread:" in reply.choices[0].message.content
    edit = last_edit(live)
    assert edit["strength"] == 0.6 and edit["mask"] is None
    with Image.open(edit["image"]) as stored:
        assert stored.getpixel((0, 0)) == (10, 200, 10)


def test_chat_with_a_link_to_an_own_image_runs_but_not_another_tenants(live, client) -> None:
    link = client.images.generate(prompt="a red fox").data[0].url
    content = [{"type": "text", "text": "more oil painting"}, {"type": "image_url", "image_url": {"url": link}}]
    client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": content}])
    assert last_edit(live)["source"] == "upload" and last_edit(live)["mask"] is None
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(live, "bob").chat.completions.create(model="loracle", messages=[{"role": "user", "content": content}])
    assert caught.value.body["code"] == "image_not_found" and "yours" in caught.value.body["message"]


def chat_image(url: str) -> callable:
    content = [{"type": "text", "text": "a fox"}, {"type": "image_url", "image_url": {"url": url}}]
    return lambda c: c.chat.completions.create(model="loracle", messages=[{"role": "user", "content": content}])


def edit(image: bytes, mask: bytes | None = None, **kwargs) -> callable:
    files = {"mask": ("m.png", mask, "image/png")} if mask is not None else {}
    return lambda c: c.images.edit(image=("x.png", image, "image/png"), prompt="a fox", **files, **kwargs)


CORRUPT = png()[: len(png()) // 2]


@pytest.mark.parametrize("call, code, param, words", [
    (edit(b"hello, not an image"), "invalid_image", "image", "not an image"),
    (edit(CORRUPT), "invalid_image", "image", "truncated or damaged"),
    (edit(b""), "invalid_image", "image", "empty"),
    (edit(noise_png(100)), "image_too_large", "image", f"limit is {MAX_UPLOAD}"),
    (edit(png(200)), "image_too_large", "image", "pixels"),
    (edit(png(fmt="GIF", mode="P", color=1)), "unsupported_image_type", "image", "GIF"),
    (edit(png((32, 16))), "invalid_image_size", "image", "square"),
    (edit(png(), mask=openai_mask(16)), "mask_size_mismatch", "mask", "same size"),
    (edit(png(), mask=b"nope"), "invalid_image", "mask", "not an image"),
    (edit(png(), extra_body={"strength": 1.5}), "invalid_strength", "strength", "between 0 and 1"),
    (edit(png(), extra_body={"strength": -0.1}), "invalid_strength", "strength", "between 0 and 1"),
    (edit(png(), size="4x4"), "invalid_size", "size", "at least 8x8"),
    (edit(png(), size="huge"), "invalid_size", "size", "WIDTHxHEIGHT"),
    (edit(png(), n=3), "invalid_n", "n", "between 1"),
    (lambda c: c.images.edit(image=[("a.png", png(), "image/png")] * 2, prompt="a fox"), "too_many_images", "image", "one image"),
    (chat_image("data:image/png;base64,@@@not-base64@@@"), "invalid_image_url", "messages[0].content[1].image_url.url", "base64"),
    (chat_image("data:text/plain;base64,aGVsbG8="), "unsupported_image_type", "messages[0].content[1].image_url.url", "text/plain"),
    (chat_image("data:image/png,rawbytes"), "invalid_image_url", "messages[0].content[1].image_url.url", "base64"),
    (chat_image("data:nonsense"), "invalid_image_url", "messages[0].content[1].image_url.url", "data URL"),
    (chat_image(data_url(b"GIF89a not really")), "invalid_image", "messages[0].content[1].image_url.url", "not an image"),
    (chat_image(data_url(noise_png(100))), "image_too_large", "messages[0].content[1].image_url.url", "limit"),
    (chat_image("https://example.com/fox.png"), "unsupported_image_url", "messages[0].content[1].image_url.url", "external"),
    (chat_image("file:///etc/passwd"), "unsupported_image_url", "messages[0].content[1].image_url.url", "external"),
])
def test_bad_uploads_get_a_400_with_the_reason(live, client, call, code, param, words) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        call(client)
    body = caught.value.body
    assert (body["code"], body["param"]) == (code, param) and words in body["message"], body


def test_malformed_multipart_requests_are_400s(live) -> None:
    auth = {"Authorization": f"Bearer {live.keys['alice']}"}
    missing = httpx.post(f"{live.url}/v1/images/edits", data={"prompt": "a fox"}, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_image"
    as_text = httpx.post(f"{live.url}/v1/images/edits", data={"prompt": "a fox", "image": "not a file"}, headers=auth)
    assert as_text.status_code == 400 and as_text.json()["error"]["param"] == "image"
    bad_strength = httpx.post(f"{live.url}/v1/images/edits", data={"prompt": "a fox", "strength": "lots"},
                              files={"image": ("a.png", png(), "image/png")}, headers=auth)
    assert bad_strength.status_code == 400 and bad_strength.json()["error"]["param"] == "strength"
    two_images = [{"type": "image_url", "image_url": {"url": data_url(png())}}] * 2 + [{"type": "text", "text": "a fox"}]
    chat = httpx.post(f"{live.url}/v1/chat/completions", headers=auth,
                      json={"model": "loracle", "messages": [{"role": "user", "content": two_images}]})
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "too_many_images"


@pytest.fixture(scope="module")
def world(server_url, tmp_path_factory):
    """A server on the digits world: pixel space, so the kept region can be compared pixel for pixel."""
    from loracle.agent.settings import Settings

    with fresh_database(server_url) as url:
        settings = Settings(home=tmp_path_factory.mktemp("api-edits-world") / "home", database_url=url,
                            base_model="world", steps=10, n_images=1, skip_threshold=0.0, max_retries=0)
        with LiveServer(settings, ApiConfig(max_n=2)) as server:
            server.key = create_key(url, "carol")
            yield server


def held_out_seven() -> np.ndarray:
    from loracle.evals.world.data import load_splits

    _, held_out = load_splits()
    x = held_out.images[(held_out.labels == 7).nonzero()[0, 0], 0]
    return ((x.numpy() + 1) * 127.5).round().astype(np.uint8)


def test_inpainting_through_the_api_keeps_the_unmasked_region(world) -> None:
    seven = held_out_seven()
    size = seven.shape[0]
    buffer = io.BytesIO()
    Image.fromarray(seven, "L").save(buffer, format="PNG")
    alpha = np.full((size, size), 255, dtype=np.uint8)
    alpha[size // 2:] = 0  # OpenAI's convention: repaint the transparent bottom half
    mask = io.BytesIO()
    Image.fromarray(np.dstack([np.zeros((size, size, 3), np.uint8), alpha]), "RGBA").save(mask, format="PNG")
    client = OpenAI(base_url=f"{world.url}/v1", api_key=world.key, max_retries=0, timeout=120)
    result = client.images.edit(image=("seven.png", buffer.getvalue(), "image/png"),
                                mask=("mask.png", mask.getvalue(), "image/png"), prompt="a bold seven",
                                response_format="b64_json", n=2, extra_body={"seed": 3})
    assert len(result.data) == 2
    for item in result.data:
        with Image.open(io.BytesIO(base64.b64decode(item.b64_json))) as out:
            assert out.size == (size, size)
            pixels = np.asarray(out.convert("L"), dtype=np.int16)
        assert np.array_equal(pixels[: size // 2], seven[: size // 2]), "the unmasked top half is the input"
        assert np.abs(pixels[size // 2:] - seven[size // 2:]).mean() > 1, "the masked bottom half was repainted"
