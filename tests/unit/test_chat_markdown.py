"""Chat answers in Markdown: catalog text cannot become a link, an image or HTML in a client that renders it
(rendered here with markdown-it, a CommonMark renderer), and the agent's own words carry no escapes."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from loracle.api.markdown import escape

RENDER = MarkdownIt("commonmark")  # raw HTML on, as in chat clients that render it


@pytest.mark.parametrize("hostile", [
    "Red Fox ![x](http://127.0.0.1:9/track.png)",
    "[click](http://evil.example)",
    "\\[click](http://evil.example)",  # a backslash of its own cannot cancel the escape
    "\\\\[click](http://evil.example)",
    "![a](b)",
    "<img src=http://evil.example/x.png>",
    "<http://evil.example>",
    "<a href='http://evil.example'>x</a>",
    "`code` [click](http://evil.example) `more`",
    "[ref]\n\n[ref]: http://evil.example",
    "<lora:x`![i](http://evil.example)`>",
    "[x <lora:a:1> ](http://evil.example)",  # a link split around a tag
    "[x\ny](http://evil.example)",
    "[x][ref] and [ref]: http://evil.example",
])
def test_catalog_text_never_renders_as_a_link_image_or_html(hostile: str) -> None:
    html = RENDER.render(escape(f"- style: {hostile}, weight 0.8"))
    assert "<a " not in html and "<img" not in html and "evil.example'>" not in html, html


def test_the_agents_own_words_and_prompts_read_clean() -> None:
    answer = ("Planner: offline. Tasks: bold; seven.\n- bold: Boldface Digits (world:digits_bold), weight 0.8\n"
              "- seven: drawn by the base model itself (no adapter needed)\n"
              'Image 1: Boldface Digits (digits_bold) at 0.8; method merge; sampled text "a bold seven, (best:1.2), card \\(medium\\), [[anime]], 1girl".\n'
              "1 image(s), 16 model evaluations.")
    assert escape(answer) == answer


def test_a_lora_tag_shows_verbatim_as_code() -> None:
    text = escape("<lora:baroque_AI:0.8> is not on this server; left it out.")
    assert text == "`<lora:baroque_AI:0.8>` is not on this server; left it out."
    assert "<code>&lt;lora:baroque_AI:0.8&gt;</code>" in RENDER.render(text)
