"""Official MAR checkpoints load safely (weights_only pickle or safetensors), keys and sizes inferred; the KL-16
tokenizer's diffusers config has MAR's stride 16 (tiny widths: no download is possible here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from loracle.generation.base_models import PickleRefusedError
from loracle.generation.mar import MAR, SIZES
from loracle.generation.mar.official import KL16_CONFIG, config_from_state_dict, kl16_vae, load_official_mar

# The official layout (class condition, KL-16 tokens, learned sigma), narrow enough for a unit test.
SMALL = SIZES["base"].with_(img_size=64, encoder_depth=1, decoder_depth=1, diffloss_d=1, diffloss_w=32,
                            buffer_size=4)


def test_official_pth_loads_with_weights_only_and_ema(tmp_path: Path):
    torch.manual_seed(0)
    model, ema = MAR(SMALL), MAR(SMALL)
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "epoch": 399,
                "args": argparse.Namespace(model="mar_base", cfg=2.9)}, path)
    with pytest.raises(PickleRefusedError):
        load_official_mar(path, config=SMALL)
    loaded = load_official_mar(path, config=SMALL, allow_pickle=True)
    assert torch.equal(loaded.z_proj.weight, ema.z_proj.weight), "the EMA weights, as the official evaluation"
    assert not loaded.training


def test_config_inferred_from_safetensors(tmp_path: Path):
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MAR(SIZES["large"]).state_dict().items()}
    cfg = config_from_state_dict({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert cfg == SIZES["large"]
    model = MAR(SMALL)
    save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    got = load_official_mar(tmp_path / "m.safetensors", config=SMALL)
    assert torch.equal(got.fake_latent, model.fake_latent)
    bad = {k: v for k, v in model.state_dict().items() if not k.startswith("diffloss.net.res_blocks")}
    bad["diffloss.net.res_blocks.0.mlp.0.weight"] = torch.zeros(32, 32)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        load_official_mar(tmp_path / "bad.safetensors", config=SMALL)


def test_kl16_config_has_stride_16_and_16_channels():
    tiny = {**KL16_CONFIG, "block_out_channels": [8, 8, 16, 16, 32], "norm_num_groups": 4}
    vae = kl16_vae(tiny)
    z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 16, 4, 4)
    assert vae.decode(z).sample.shape == (1, 3, 64, 64)
