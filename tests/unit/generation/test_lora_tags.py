"""`<lora:>` tags in any letter case and every weight form A1111 writes (`w`, `te:unet`, `unet=w`)."""

from __future__ import annotations

import pytest

from loracle.generation.prompt_tags import parse_lora_tags, strip_network_tags


@pytest.mark.parametrize("prompt, picks", [
    ("a fox <LoRA:ink:0.6>", {"ink": 0.6}),
    ("a fox <LORA:ink>", {"ink": 1.0}),
    ("a fox <lora:ink:unet=1.5>", {"ink": 1.5}),
    ("a fox <lora:ink:UNET=0.25>", {"ink": 0.25}),
    ("a fox <lora:ink:0.3:unet=1.75>", {"ink": 1.75}),  # te weight, then unet: the UNet weight wins
    ("a fox <lora:ink:0.3:>", {"ink": 0.3}),  # empty unet field: the te weight
    ("a fox <lora: ink :0.5>", {"ink": 0.5}),
])
def test_tag_forms(prompt, picks):
    text, got = parse_lora_tags(prompt)
    assert got == picks and text == "a fox"


def test_other_networks_keep_their_case_and_place():
    text, picks = parse_lora_tags("<Lyco:b:1> a fox <HyperNet:c>, <lora:a:0.5> sunset")
    assert picks == {"a": 0.5}
    assert text == "<Lyco:b:1> a fox <HyperNet:c>, sunset"
    assert strip_network_tags("<LYCO:b> fox <Lora:a:1>").split() == ["fox"]


def test_bad_weight_named():
    with pytest.raises(ValueError, match=r"Bad weight 'strong' in LoRA tag '<lora:a:unet=strong>'"):
        parse_lora_tags("<lora:a:unet=strong>")
    # A fourth field (A1111's dynamic rank) is not read: refused by name rather than silently dropped.
    with pytest.raises(ValueError, match=r"Bad weight '0.7:16' in LoRA tag '<lora:a:0.5:0.7:16>'"):
        parse_lora_tags("<lora:a:0.5:0.7:16>")
