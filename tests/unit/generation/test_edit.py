"""Image-to-image and inpainting on tiny models: strength ends, NFE, kept regions, inpainting UNets, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from loracle.generation.base_models import build_tiny_model
from loracle.generation.edit import edit_steps, encode_image, image_to_tensor, is_inpainting_unet, mask_to_tensor, to_latent_mask
from loracle.generation.engine import Engine, GenerationRequest
from loracle.generation.guidance import GuidanceSettings
from loracle.generation.loop import decode
from loracle.generation.schedulers import SCHEDULERS
from loracle.generation.skipping import SkipSettings
from loracle.generation.synthetic import write_synthetic_lora

OFF = SkipSettings(threshold=0.0)


def arr(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def picture(size: int = 32, seed: int = 0) -> Image.Image:
    """A smooth RGB test picture (gradients plus a square), so resizing and encoding are meaningful."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 200
    lo, hi = size // 4 + seed, size // 2 + seed
    rgb[lo:hi, lo:hi] = [250, 30, 30]
    return Image.fromarray(rgb.astype(np.uint8))


def bottom_half_mask(size: int = 32) -> Image.Image:
    m = np.zeros((size, size), np.uint8)
    m[size // 2:] = 255
    return Image.fromarray(m, mode="L")


@pytest.fixture(scope="module")
def pixel():
    """Pixel-space tiny model (as the digits world): the kept region can be checked exactly."""
    return build_tiny_model("sd15", seed=0, with_vae=False)


@pytest.fixture(scope="module")
def pixel_engine(pixel, tmp_path_factory):
    d = tmp_path_factory.mktemp("pixel-loras")
    write_synthetic_lora(d / "px_style.safetensors", pixel, seed=11)
    return Engine(pixel, [d], guide_models={"self": pixel})


@pytest.fixture(scope="module")
def engine(tiny, lora_dir):
    return Engine(tiny, [lora_dir], max_loaded=4)


def gen(engine, **kw):
    kw.setdefault("steps", 10)
    kw.setdefault("skipping", OFF)
    kw.setdefault("scheduler", "ddim")
    return engine.generate(GenerationRequest(kw.pop("prompt", "a red fox"), **kw))


# ----------------------------------------------------------------------------------------- strength ends


def test_strength_zero_returns_the_input(engine, tiny, pixel_engine):
    im = picture()
    out = gen(pixel_engine, image=im, strength=0.0, n_images=2)
    assert out.nfe == [0, 0] and out.model_calls == 0
    assert all(np.array_equal(arr(o), arr(im)) for o in out.images)  # pixel space: exactly the input
    latent = gen(engine, image=im, strength=0.0)
    roundtrip = decode(tiny, encode_image(tiny, image_to_tensor(im, 3, 32, 32)))[0]
    assert latent.nfe == [0] and np.array_equal(arr(latent.images[0]), arr(roundtrip))  # VAE: encode/decode only


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_strength_one_equals_text_to_image(engine, scheduler):
    t2i = gen(engine, scheduler=scheduler, seed=3)
    i2i = gen(engine, scheduler=scheduler, seed=3, image=picture(), strength=1.0)
    assert np.array_equal(arr(t2i.images[0]), arr(i2i.images[0]))
    assert t2i.nfe == i2i.nfe


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_half_strength_costs_half_the_steps_and_stays_near_the_input(pixel_engine, scheduler):
    im = picture()
    full = gen(pixel_engine, scheduler=scheduler, steps=10)
    half = gen(pixel_engine, scheduler=scheduler, steps=10, image=im, strength=0.5)
    low = gen(pixel_engine, scheduler=scheduler, steps=10, image=im, strength=0.2)
    assert full.nfe == [20] and half.nfe == [10] and low.nfe == [4]  # CFG: 2 evaluations per step
    err_low = np.abs(arr(low.images[0]) - arr(im)).mean()
    err_half = np.abs(arr(half.images[0]) - arr(im)).mean()
    assert 0 < err_low < err_half  # more strength, further from the input


def test_edit_steps_rounds():
    assert [edit_steps(s, 30) for s in (0.0, 0.01, 0.5, 0.6, 1.0)] == [0, 0, 15, 18, 30]


# ---------------------------------------------------------------------------------------------- inpainting


def test_all_zero_mask_leaves_the_image_unchanged(pixel_engine, engine):
    im = picture()
    black = Image.new("L", im.size, 0)
    out = gen(pixel_engine, image=im, mask=black, strength=1.0)
    assert np.array_equal(arr(out.images[0]), arr(im))
    same = gen(engine, image=im, mask=black, strength=0.9)
    untouched = gen(engine, image=im, strength=0.0)
    assert np.array_equal(arr(same.images[0]), arr(untouched.images[0]))


@pytest.mark.parametrize("scheduler, guidance", zip(SCHEDULERS, ["cfg", "auto", "both", "auto", "cfg"]))
def test_inpainting_keeps_the_unmasked_region(pixel_engine, scheduler, guidance):
    im, mask = picture(), bottom_half_mask()
    g = GuidanceSettings(guidance, scale=3.0)
    out = gen(pixel_engine, scheduler=scheduler, guidance=g, image=im, mask=mask, strength=1.0,
              mixes=[{"px_style": 1.0}, {}], skipping=SkipSettings(threshold=0.05, max_skip=2), steps=12)
    assert out.nfe[0] < 12 * len(g.branches)  # some steps were skipped
    for o in out.images:
        assert np.array_equal(arr(o)[:16], arr(im)[:16])  # kept half: exactly the input
        assert np.abs(arr(o)[16:] - arr(im)[16:]).mean() > 5  # repainted half changed
    assert not np.array_equal(arr(out.images[0]), arr(out.images[1]))  # the adapter changed the repaint


def test_feathered_mask_is_soft_and_blends(pixel_engine):
    m = mask_to_tensor(bottom_half_mask(), 32, 32, feather=3)
    assert 0 < m[0, 0, 14, 0] < 0.5 < m[0, 0, 17, 0] < 1 and m[0, 0, 0, 0] < 1e-3
    assert set(mask_to_tensor(bottom_half_mask(), 32, 32).unique().tolist()) == {0.0, 1.0}
    assert to_latent_mask(m, 8).shape == (1, 1, 4, 4)
    im = picture()
    out = gen(pixel_engine, image=im, mask=bottom_half_mask(), mask_feather=3, strength=1.0)
    assert np.array_equal(arr(out.images[0])[:8], arr(im)[:8])  # far from the edge: kept
    assert "Mask blur: 3" in out.parameters[0] and "Denoising strength: 1.0" in out.parameters[0]


def test_latent_inpainting_and_img2img_with_adapters(engine):
    im, mask = picture(), bottom_half_mask()
    plain = gen(engine, image=im, strength=0.6)
    styled = gen(engine, image=im, strength=0.6, mixes=[{"style0": 1.0}])
    assert np.abs(arr(plain.images[0]) - arr(styled.images[0])).max() > 5
    inp = gen(engine, image=im, mask=mask, strength=0.8, n_images=2)
    assert inp.nfe == [16, 16] and len(inp.images) == 2


def test_inpainting_unet_gets_mask_and_masked_image_channels(tiny):
    from diffusers import UNet2DConditionModel

    cfg = dict(tiny.unet.config)
    cfg["in_channels"] = 9
    torch.manual_seed(0)
    model = build_tiny_model("sd15", seed=0)
    model.unet = UNet2DConditionModel.from_config(cfg).eval().requires_grad_(False)
    assert is_inpainting_unet(model) and model.latent_channels == 4
    eng = Engine(model)
    im = picture()
    a = gen(eng, image=im, mask=bottom_half_mask(), strength=1.0)
    b = gen(eng, image=im, mask=Image.new("L", im.size, 255), strength=1.0)
    assert a.nfe == [20] and a.images[0].size == (32, 32)
    assert not np.array_equal(arr(a.images[0]), arr(b.images[0]))  # the mask channels reach the UNet
    t2i = gen(eng)  # no image: an empty, fully masked canvas
    assert t2i.nfe == [20]


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, msg", [
    ({"image": picture(), "strength": 1.5}, "strength must be a number in"),
    ({"image": picture(), "strength": -0.1}, "strength must be a number in"),
    ({"mask": bottom_half_mask()}, "a mask needs an input image"),
    ({"image": picture(), "mask": bottom_half_mask(16)}, "mask size 16x16 does not match image size 32x32"),
    ({"image": picture(), "mask": Image.new("RGBA", (32, 32))}, "got mode 'RGBA'"),
    ({"image": picture(), "mask_feather": -1}, "mask_feather must be an integer"),
    ({"image": "in.png"}, "image must be a PIL image"),
])
def test_bad_edit_inputs_raise(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GenerationRequest("a fox", **kw)


def test_one_input_per_image_equals_separate_requests(pixel_engine):
    ims, mask = [picture(seed=0), picture(seed=4)], bottom_half_mask()
    together = gen(pixel_engine, image=ims, mask=mask, strength=0.7, seeds=[1, 2], steps=6)
    apart = [gen(pixel_engine, image=im, mask=mask, strength=0.7, seeds=[s], steps=6) for im, s in zip(ims, [1, 2])]
    assert together.pipeline_calls == 1
    for out, alone, im in zip(together.images, apart, ims):
        assert np.abs(arr(out) - arr(alone.images[0])).max() <= 1  # batching only changes float rounding
        assert np.array_equal(arr(out)[:16], arr(im)[:16])
    with pytest.raises(ValueError, match="got 2 input images for 3 images"):
        GenerationRequest("a fox", image=ims, n_images=3)


def test_input_is_resized_to_the_request_size(pixel_engine):
    out = gen(pixel_engine, image=picture(48), strength=0.0)
    assert out.images[0].size == (32, 32)
