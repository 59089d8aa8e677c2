"""The service through the official `openai` client against a real uvicorn server (tiny model)."""

from __future__ import annotations

import base64
import re

import httpx
import openai
import pytest
from openai import OpenAI

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\((http[^)]+)\)")


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("api-openai"), url, embedder)
        with LiveServer(settings, ApiConfig(max_n=2, max_steps=8, max_body_bytes=64 * 1024, max_upload_bytes=32 * 1024)) as server:
            server.key = create_key(url, "alice")
            yield server


@pytest.fixture
def client(live) -> OpenAI:
    return OpenAI(base_url=f"{live.url}/v1", api_key=live.key, max_retries=0, timeout=120)


def runs_of(live, thread_id: str) -> list[tuple[str, str]]:
    with live.service.agent.db.connection() as conn:
        return conn.execute("SELECT status, tenant FROM runs WHERE thread_id = %s ORDER BY created_at", (thread_id,)).fetchall()


def test_models_list_the_agent_and_the_base_model(client) -> None:
    assert {m.id for m in client.models.list()} == {"loracle", "tiny"}


def test_chat_answers_with_picks_and_image_links_and_continues_the_thread(live, client) -> None:
    messages = [{"role": "user", "content": "a watercolor painting of a red fox"}]
    first = client.chat.completions.create(model="loracle", messages=messages, seed=3)
    text = first.choices[0].message.content
    assert "Watercolor Wash" in text and "Red Fox" in text, text
    links = IMAGE_LINK.findall(text)
    assert len(links) == 1
    image = httpx.get(links[0])  # a signed link works without the key, as in a chat front end
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG") and "immutable" in image.headers["cache-control"]
    thread_id = first.model_extra["thread_id"]
    assert f"thread: `{thread_id}`" in text

    # A stock chat client sends the history back; the thread marker in it continues the thread.
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "drop the watercolor look, more oil painting"}]
    second = client.chat.completions.create(model="loracle", messages=messages)
    assert second.model_extra["thread_id"] == thread_id
    reply = second.choices[0].message.content
    assert "Oil Painting" in reply and "Watercolor Wash" not in reply, reply
    assert runs_of(live, thread_id) == [("done", "alice"), ("done", "alice")]


def test_the_answer_reads_clean_in_a_plain_client(client) -> None:
    """The official client prints `content` as is: no Markdown escapes in the agent's words or the prompt it
    quotes, and a `<lora:>` tag shown as code (a Markdown client would read it as a link)."""
    reply = client.chat.completions.create(model="loracle", seed=5,
                                           messages=[{"role": "user", "content": "a red fox, (best:1.2) <lora:baroque_AI:0.8>"}])
    text = reply.choices[0].message.content
    assert "\\" not in text and "1 image(s)" in text and "(best:1.2)" in text, text
    assert "`<lora:baroque_AI>` is not on this server" in text, text


def test_thread_continues_by_header_and_metadata(live, client) -> None:
    client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": "a red fox"}],
                                   metadata={"thread_id": "meta-1"})
    again = client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": "at night"}],
                                           extra_headers={"X-Loracle-Thread": "meta-1"})
    assert again.model_extra["thread_id"] == "meta-1"
    assert "Refining" not in again.choices[0].message.content  # non-streamed: the answer only
    assert [s for s, _ in runs_of(live, "meta-1")] == ["done", "done"]


def test_streaming_chat_sends_progress_then_the_answer(live, client) -> None:
    stream = client.chat.completions.create(model="loracle", stream=True,
                                            messages=[{"role": "user", "content": "a red fox in a misty forest"}],
                                            metadata={"n_images": "2"})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.index("Planning:") < text.index("Picked:") < text.index("Sampling 1/3") < text.index("Red Fox (")
    assert len(IMAGE_LINK.findall(text)) == 2


def test_streamed_frames_end_with_done(live) -> None:
    body = {"model": "loracle", "stream": True, "messages": [{"role": "user", "content": "a fox"}]}
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {live.key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in response.iter_lines() if line.startswith("data:")]
    assert frames[-1] == "data: [DONE]"


def test_images_as_urls_and_base64(live, client) -> None:
    result = client.images.generate(prompt="an oil painting of a fox", n=2, response_format="url")
    assert len(result.data) == 2 and all(d.revised_prompt.startswith("an oil painting of a fox") for d in result.data)
    for item in result.data:
        assert httpx.get(item.url).headers["content-type"] == "image/png"
    encoded = client.images.generate(prompt="a fox", response_format="b64_json", size="auto")
    assert base64.b64decode(encoded.data[0].b64_json).startswith(b"\x89PNG")
    with live.service.agent.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM images WHERE tenant = 'alice'").fetchone()[0] >= 3


@pytest.mark.parametrize("call, error, param", [
    (lambda c: c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]), openai.NotFoundError, "model"),
    (lambda c: c.chat.completions.create(model="loracle", messages=[{"role": "user", "content": " "}]), openai.BadRequestError, "message"),
    (lambda c: c.chat.completions.create(model="loracle", messages=[{"role": "user", "content": "x" * 5000}]), openai.BadRequestError, "message"),
    (lambda c: c.chat.completions.create(model="loracle", messages=[{"role": "assistant", "content": "hi"}]), openai.BadRequestError, "messages"),
    (lambda c: c.chat.completions.create(model="loracle", messages=[]), openai.BadRequestError, "messages"),
    (lambda c: c.images.generate(prompt="a fox", n=3), openai.BadRequestError, "n"),
    (lambda c: c.images.generate(prompt="a fox", size="99999x99999"), openai.BadRequestError, "size"),
    (lambda c: c.images.generate(prompt="a fox", model="dall-e-9"), openai.NotFoundError, "model"),
    (lambda c: c.images.generate(prompt="a fox", response_format="gif"), openai.BadRequestError, "response_format"),
])
def test_bad_input_is_an_openai_error_not_a_500(client, call, error, param) -> None:
    with pytest.raises(error) as caught:
        call(client)
    assert caught.value.body["param"] == param and caught.value.body["message"]


def test_wrong_key_and_oversized_body(live) -> None:
    bad = OpenAI(base_url=f"{live.url}/v1", api_key="lor_not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid or revoked"):
        bad.models.list()
    no_key = httpx.get(f"{live.url}/v1/models")
    assert no_key.status_code == 401, "keys exist, so the local mode is off"
    headers = {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"}
    big = httpx.post(f"{live.url}/v1/images/generations", content=b"{" + b" " * 70_000 + b"}", headers=headers)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    # Chat may carry an image (base64): its limit is the body limit plus room for images, and no more.
    assert httpx.post(f"{live.url}/v1/chat/completions", content=b"{" + b" " * 70_000 + b"}", headers=headers).status_code == 400
    bigger = httpx.post(f"{live.url}/v1/chat/completions", content=b"{" + b" " * 200_000 + b"}", headers=headers)
    assert bigger.status_code == 413 and bigger.json()["error"]["code"] == "body_too_large"
