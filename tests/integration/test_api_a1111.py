"""The A1111 web API through the real `webuiapi` client and raw requests shaped like Open WebUI's, against a
real uvicorn server (tiny model, few steps)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time

import httpx
import pytest
import webuiapi
from PIL import Image

from loracle.api.config import ApiConfig
from loracle.generation.output import parse_parameters
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database

LONG = 200  # steps of a request that must still be running when it is interrupted


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        folder = tmp_path_factory.mktemp("api-a1111")
        settings = build_world(folder, url, embedder)
        config = ApiConfig(max_n=2, max_steps=LONG, max_upload_bytes=64 * 1024, max_image_pixels=512 * 512)
        with LiveServer(settings, config) as server:
            server.key = create_key(url, "alice")
            server.other_key = create_key(url, "bob")
            server.adapters = folder / "adapters"
            yield server


@pytest.fixture
def api(live) -> webuiapi.WebUIApi:
    host, port = live.url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), username="alice", password=live.key, steps=3)


def addnet_hash(path) -> str:
    """A1111's LoRA hash, computed here from the file: sha256 of the bytes after the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_txt2img_picks_adapters_and_writes_civitai_metadata(live, api) -> None:
    result = api.txt2img(prompt="a watercolor painting of a red fox", seed=11, steps=3, width=32, height=32,
                         sampler_name="Euler a")
    assert len(result.images) == 1 and result.images[0].size == (32, 32)
    info = result.info
    picked = [p["name"] for ps in info["loracle"]["picks"].values() for p in ps]
    assert "Watercolor Wash" in picked and "Red Fox" in picked, info["loracle"]
    assert info["seed"] == 11 and info["all_seeds"] == [11] and info["sampler_name"] == "Euler a" and info["steps"] == 3
    # The PNG itself says which adapters made it, with the hashes A1111 writes, computed here independently.
    fields = parse_parameters(result.images[0].info["parameters"])
    assert fields["Seed"] == "11" and fields["Sampler"] == "Euler a"
    hashes = dict(item.split(": ") for item in fields["Lora hashes"].split(", "))
    tagged = re.findall(r"<lora:([^:>]+):", fields["Prompt"])
    assert tagged and sorted(hashes) == sorted(tagged)  # the image's mix, one hash per <lora:> tag
    for name in tagged:
        assert hashes[name] == addnet_hash(live.adapters / f"{name}.safetensors")
    assert info["infotexts"] == [result.images[0].info["parameters"]]
    # png-info reads it back
    assert api.png_info(result.images[0]).info == result.images[0].info["parameters"]


def test_the_same_seed_draws_the_same_image_and_a_pinned_lora_is_used(api) -> None:
    first = api.txt2img(prompt="a fox <lora:lora_104:0.7>", seed=5, steps=3, width=32, height=32)
    again = api.txt2img(prompt="a fox <lora:lora_104:0.7>", seed=5, steps=3, width=32, height=32)
    assert first.images[0].tobytes() == again.images[0].tobytes()
    assert "<lora:lora_104:0.7>" in first.images[0].info["parameters"]


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_a_seed_comes_back_as_sent_at_both_ends_of_a1111s_range(api, seed) -> None:
    """A1111 clients draw seeds up to 2^32 - 1: info and each PNG report the seed sent, image i gets seed + i
    (wrapping within the range, so every reported seed can be sent back)."""
    result = api.txt2img(prompt="a fox", seed=seed, steps=3, width=32, height=32, batch_size=2)
    seeds = [seed, (seed + 1) % 2**32]
    assert result.info["seed"] == seed and result.info["all_seeds"] == seeds
    assert [int(parse_parameters(im.info["parameters"])["Seed"]) for im in result.images] == seeds
    assert result.info["infotexts"] == [im.info["parameters"] for im in result.images]


def test_another_size_is_drawn_natively_and_resampled(api) -> None:
    result = api.txt2img(prompt="a fox", steps=3, width=96, height=64, batch_size=2)
    assert [i.size for i in result.images] == [(96, 64), (96, 64)]
    assert result.info["loracle"]["drawn_size"] == "32x32" and result.info["width"] == 96
    assert len(set(result.info["all_seeds"])) == 2
    assert parse_parameters(result.images[0].info["parameters"])["Resampled from"] == "32x32"


def test_img2img_with_a_mask_inpaints_where_the_mask_is_white(live, api) -> None:
    source = Image.new("RGB", (64, 64), (200, 40, 40))  # another size than the model's: stretched to it
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # A1111: white = repaint (the left half)
    result = api.img2img(images=[source], mask_image=mask, prompt="an oil painting of a fox", steps=3,
                         denoising_strength=0.9, width=32, height=32)
    assert result.images[0].size == (32, 32) and result.info["denoising_strength"] == 0.9
    assert "inpainted the masked region of the uploaded image at strength 0.9" in result.info["loracle"]["answer"]
    assert "Denoising strength: 0.9" in result.images[0].info["parameters"]
    with live.service.agent.db.connection() as conn:
        plan = conn.execute("SELECT plan FROM runs WHERE id = %s", (result.info["loracle"]["run_id"],)).fetchone()[0]
    stored = Image.open(live.service.settings.images_dir / plan["edit"]["mask"])  # plans hold paths under the images folder
    assert stored.size == (32, 32) and stored.getpixel((4, 16)) == 255 and stored.getpixel((28, 16)) == 0


def test_loras_models_options_and_samplers(live, api) -> None:
    loras = {item["name"]: item for item in api.get_loras()}
    assert {"lora_101", "lora_102", "lora_103", "lora_104"} <= set(loras)
    assert loras["lora_101"]["path"] == "lora_101.safetensors" and loras["lora_101"]["loracle"]["name"] == "Watercolor Wash"
    models = api.get_sd_models()
    assert models[0]["title"] == "tiny" and api.get_options()["sd_model_checkpoint"] == "tiny"
    api.set_options({"sd_model_checkpoint": "tiny"})  # the loaded model: nothing to switch
    assert httpx.post(f"{live.url}/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors"},
                      auth=("alice", live.key)).status_code == 404
    assert {s["name"] for s in api.get_samplers()} == {"DDIM", "DPM++ 2M", "DPM++ 2M Karras", "Euler", "Euler a"}
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_progress_then_interrupt(live, api) -> None:
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=api.txt2img(prompt="a fox", steps=LONG, width=32, height=32)))
    worker.start()
    deadline = time.monotonic() + 60
    progress = api.get_progress()
    while progress["state"]["sampling_step"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        progress = api.get_progress()
    assert progress["state"]["job"] == "txt2img" and 0 < progress["progress"] < 1
    assert progress["state"]["sampling_steps"] == LONG
    # another tenant sees nothing running and cannot stop it
    assert httpx.get(f"{live.url}/sdapi/v1/progress", auth=("bob", live.other_key)).json()["state"]["job_count"] == 0
    assert httpx.post(f"{live.url}/sdapi/v1/interrupt", auth=("bob", live.other_key)).json() == {"interrupted": 0}
    assert api.interrupt() == {"interrupted": 1}
    worker.join(60)
    result = outcome["result"]
    assert result.images == [] and result.info["loracle"]["interrupted"] is True
    with live.service.agent.db.connection() as conn:
        assert conn.execute("SELECT status FROM runs WHERE tenant = 'alice' ORDER BY created_at DESC LIMIT 1").fetchone()[0] \
            in ("cancelled", "interrupted")


def test_open_webui_automatic1111_engine_default_bodies(live) -> None:
    """Open WebUI's automatic1111 engine: options, sd-models, then txt2img with width/height from its 512x512 default."""
    headers = {"authorization": "Basic " + base64.b64encode(f"alice:{live.key}".encode()).decode()}
    options = httpx.get(f"{live.url}/sdapi/v1/options", headers=headers).json()
    models = httpx.get(f"{live.url}/sdapi/v1/sd-models", headers=headers).json()
    assert options["sd_model_checkpoint"] in [m["title"] for m in models]
    response = httpx.post(f"{live.url}/sdapi/v1/txt2img", headers=headers, timeout=120,
                          json={"prompt": "a red fox", "batch_size": 1, "width": 512, "height": 512, "steps": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.size == (512, 512) and json.loads(body["info"])["loracle"]["drawn_size"] == "32x32"


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "a fox", "sampler_name": "Heun++ 9"}, 404, "Sampler not found"),
    ({"prompt": "a fox", "steps": -3}, 400, "steps"),
    ({"prompt": "a fox", "seed": 2**32}, 400, "seed"),
    ({"prompt": "a fox", "batch_size": 2, "n_iter": 2}, 400, "between 1 and 2, got 4"),
    ({"prompt": "a fox", "width": 4096, "height": 4096}, 400, "pixels"),
    ({"prompt": "   "}, 400, "prompt"),
    ({"prompt": "a fox", "override_settings": {"sd_model_checkpoint": "other.safetensors"}}, 404, "not found"),
])
def test_bad_txt2img_bodies_get_a_clear_4xx(live, body, status, words) -> None:
    response = httpx.post(f"{live.url}/sdapi/v1/txt2img", json=body, auth=("alice", live.key), timeout=60)
    assert response.status_code == status and words in response.text, response.text


@pytest.mark.parametrize("fields, param, words", [
    ({"init_images": [base64.b64encode(b"%PDF-1.4 not an image").decode()]}, "init_images[0]", "not an image"),
    ({"init_images": ["@@@"]}, "init_images[0]", "base64"),
    ({"init_images": ["https://example.com/a.png"]}, "init_images[0]", "does not fetch"),
    ({"mask": png_b64(Image.new("L", (16, 16), 255))}, "mask", "same size"),
    ({"denoising_strength": 1.5}, "denoising_strength", "less than or equal"),
])
def test_bad_img2img_input_gets_a_400_naming_the_field(live, fields, param, words) -> None:
    body = {"prompt": "a fox", "steps": 3, "init_images": [png_b64(Image.new("RGB", (32, 32)))], **fields}
    response = httpx.post(f"{live.url}/sdapi/v1/img2img", json=body, auth=("alice", live.key), timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert words in response.json()["error"]["message"]


def test_wrong_basic_credentials_are_refused(live) -> None:
    for auth in (("alice", "not-a-key"), ("bob", live.key), ("", "")):
        response = httpx.get(f"{live.url}/sdapi/v1/loras", auth=auth)
        assert response.status_code == 401, auth
        assert response.headers.get("www-authenticate") == "Basic" or auth == ("", "")
    assert httpx.get(f"{live.url}/sdapi/v1/loras").status_code == 401  # no local mode once keys exist


def test_png_info_rejects_what_is_not_an_image(live) -> None:
    response = httpx.post(f"{live.url}/sdapi/v1/png-info", json={"image": base64.b64encode(b"hello").decode()},
                          auth=("alice", live.key))
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"


def test_open_webui_openai_engine_default_bodies(live) -> None:
    """Open WebUI's openai engine: `dall-e-2` at 512x512 as b64_json, and an edit with `image[]` multipart fields."""
    headers = {"Authorization": f"Bearer {live.key}"}
    response = httpx.post(f"{live.url}/v1/images/generations", headers=headers, timeout=120, json={
        "model": "dall-e-2", "prompt": "a watercolor fox", "n": 1, "size": "512x512", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == "512x512" and body["drawn_size"] == "32x32"
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.size == (512, 512) and "Resampled from: 32x32" in image.info["parameters"]

    source = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(source, format="PNG")
    files = [("image[]", ("3f2c.png", source.getvalue(), "image/png"))]
    data = {"model": "gpt-image-1", "prompt": "make it an oil painting", "size": "512x512", "response_format": "b64_json"}
    edited = httpx.post(f"{live.url}/v1/images/edits", headers=headers, data=data, files=files, timeout=120)
    assert edited.status_code == 200, edited.text
    out = Image.open(io.BytesIO(base64.b64decode(edited.json()["data"][0]["b64_json"])))
    assert out.size == (512, 512) and "Denoising strength" in out.info["parameters"]


OPEN_WEBUI_TITLE_TASK = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: a watercolor painting of a red fox
ASSISTANT: Planner: offline. Tasks: a watercolor painting; a red fox.
</chat_history>"""

OPEN_WEBUI_TAGS_TASK = OPEN_WEBUI_TITLE_TASK.replace('{ "title": "your concise title here" }', '{ "tags": ["tag1", "tag2"] }')
OPEN_WEBUI_FOLLOW_UPS_TASK = OPEN_WEBUI_TITLE_TASK.replace('{ "title": "your concise title here" }',
                                                           '{ "follow_ups": ["Question 1?", "Question 2?"] }')


def runs_of(live, tenant: str) -> int:
    with live.service.agent.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM runs WHERE tenant = %s", (tenant,)).fetchone()[0]


@pytest.mark.parametrize("task, key, expected", [
    (OPEN_WEBUI_TITLE_TASK, "title", "A watercolor painting of a"),
    (OPEN_WEBUI_TAGS_TASK, "tags", ["Arts", "Image Generation"]),
    (OPEN_WEBUI_FOLLOW_UPS_TASK, "follow_ups", []),
])
def test_open_webui_background_tasks_get_json_text_and_no_run(live, task, key, expected) -> None:
    before = runs_of(live, "bob")
    for stream in (False, True):
        response = httpx.post(f"{live.url}/v1/chat/completions", headers={"Authorization": f"Bearer {live.other_key}"},
                              json={"model": "loracle", "stream": stream, "messages": [{"role": "user", "content": task}]})
        assert response.status_code == 200
        if stream:
            content = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                              for line in response.text.splitlines() if line.startswith("data:") and "[DONE]" not in line)
        else:
            content = response.json()["choices"][0]["message"]["content"]
        assert json.loads(content)[key] == expected
    assert runs_of(live, "bob") == before  # no generation, no run slot


def test_a_question_about_the_catalog_is_answered_from_a_search(live) -> None:
    before = runs_of(live, "bob")
    response = httpx.post(f"{live.url}/v1/chat/completions", headers={"Authorization": f"Bearer {live.other_key}"},
                          json={"model": "loracle", "messages": [
                              {"role": "user", "content": "what adapters do you have for watercolor?"}]})
    text = response.json()["choices"][0]["message"]["content"]
    assert "Watercolor Wash" in text and "![" not in text
    assert runs_of(live, "bob") == before
