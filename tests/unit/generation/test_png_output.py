"""PNG parameters with skipping on, where the real NFE differs from steps x branches, and the A1111 layout."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from loracle.generation.base_models import build_tiny_model
from loracle.generation.engine import Engine, GenerationRequest
from loracle.generation.output import format_parameters, lora_tag, png_bytes, read_parameters, save_png, write_atomic
from loracle.generation.skipping import SkipSettings


def test_parameters_layout():
    text = format_parameters(prompt="a fox, at dusk", negative_prompt="", steps=20, sampler="dpmpp_2m_karras",
                             cfg_scale=6.0, seed=7, width=64, height=48, model="m", mix={"b/x.safetensors": 0.5, "a": 1.25},
                             nfe=31, extra={"Note": "a: b, c", "Time": "12:30", "List": "a,b"})
    lines = text.splitlines()
    assert lines == ["a fox, at dusk <lora:a:1.25> <lora:x:0.5>",
                     'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 7, Size: 64x48, Model: m, NFE: 31, '
                     'Note: "a: b, c", Time: "12:30", List: "a,b"']
    assert format_parameters(prompt="p", negative_prompt="", steps=1, sampler="new_one", cfg_scale=1.5, seed=0,
                             width=8, height=8, model="m", mix={}, nfe=1).startswith("p\nSteps: 1, Sampler: new_one, CFG scale: 1.5")


@pytest.mark.parametrize("ref, tag", [("style", "<lora:style:1>"), ("dir/sub/ink.safetensors", "<lora:ink:0.7>"),
                                      ("ink.v2", "<lora:ink.v2:0.7>")])
def test_lora_tag_names(ref, tag):
    assert lora_tag(ref, 1.0 if tag.endswith(":1>") else 0.7) == tag


def test_failed_write_leaves_no_temp_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(OSError):
        write_atomic(tmp_path / "taken", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_png_round_trip(tmp_path):
    image = Image.new("RGB", (4, 3), (10, 20, 30))
    path = save_png(image, tmp_path / "deep" / "x.png", "hello\nworld")
    assert read_parameters(path) == "hello\nworld"
    assert png_bytes(image, "hello\nworld") == path.read_bytes()
    with Image.open(path) as back:
        assert back.size == (4, 3) and back.getpixel((0, 0)) == (10, 20, 30)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["x.png"], "no temp file left behind"


def test_png_nfe_with_skipping_is_the_counted_one(tmp_path):
    """The NFE written into the PNG is the number of noise predictions the UNet really made for the image
    (counted here from its forward calls), below the nominal steps x branches once steps are skipped."""
    model = build_tiny_model("sd15", seed=0)  # its own: the shared one's adapter manager has other folders
    engine = Engine(model, [tmp_path / "adapters"])
    rows = []
    hook = model.unet.register_forward_pre_hook(lambda module, args, kwargs: rows.append(args[0].shape[0]),
                                               with_kwargs=True)
    try:
        r = engine.generate(GenerationRequest("a red fox", steps=12, scheduler="ddim", seeds=[5],
                                              skipping=SkipSettings(threshold=10.0, max_skip=2)))
    finally:
        hook.remove()
    text = read_parameters(r.save(tmp_path)[0])
    nfe = int(re.search(r"NFE: (\d+)", text).group(1))
    assert nfe == sum(rows) == r.nfe[0]
    assert nfe < 12 * 2, "skipping saved no call, so this test proves nothing"
    assert "Steps: 12" in text
