"""A single-file SD 1.5 / SDXL checkpoint, as A1111, Forge and ComfyUI users keep them, loads offline on a fresh
machine and draws what the same weights draw from a diffusers folder.

The checkpoints are the tiny models written in the original LDM key layout (`ldm_layout.py`); a fresh machine is
a child process with `HF_HUB_OFFLINE=1` and an empty Hugging Face cache, so any config or tokenizer the loader
tried to fetch from the hub would fail the load.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loracle.generation.base_models import PIPELINES, build_tiny_model, clip_tokenizer, load_base_model, save_base_model
from loracle.generation.engine import Engine, GenerationRequest
from tests.integration.ldm_layout import write_checkpoint, write_configs

FAMILIES = ("sd15", "sdxl")
PROMPT = "a red fox in the snow"

# Loads each checkpoint given as (file, config folder) and saves the image it draws, with its name and Model hash.
CHILD = """
import json, sys
import numpy as np
from loracle.generation.base_models import load_base_model
from loracle.generation.engine import Engine, GenerationRequest

report = {}
for file, config, out in json.loads(sys.argv[1]):
    model = load_base_model(file, config=config, device="cpu")
    image = Engine(model).generate(GenerationRequest(sys.argv[2], steps=4, seed=7, skipping=None)).images[0]
    np.save(out, np.asarray(image))
    report[file] = {"family": model.family, "name": model.name, "hash": model.short_hash}
print(json.dumps(report))
"""


def draw(model) -> np.ndarray:
    return np.asarray(Engine(model).generate(GenerationRequest(PROMPT, steps=4, seed=7, skipping=None)).images[0])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Per family: the model as an LDM checkpoint, a folder of its configs, and a diffusers folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for family in FAMILIES:
        model = build_tiny_model(family, seed=11)
        out[family] = {"file": write_checkpoint(model, root / f"{family}-tiny.safetensors"),
                       "config": write_configs(model, root / f"{family}-configs"),
                       "folder": save_base_model(model, root / f"{family}-diffusers")}
    return out


def test_ldm_checkpoints_load_offline_and_draw_what_their_diffusers_folders_draw(written, tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "DIFFUSERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    jobs = [[str(w["file"]), str(w["config"]), str(tmp_path / f"{family}.npy")] for family, w in written.items()]
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs), PROMPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any(hf_home.rglob("*.json")), "the loader fetched configs through the Hugging Face cache"
    for family, w in written.items():
        loaded = report[str(w["file"])]
        assert loaded["family"] == family and loaded["name"] == f"{family}-tiny"
        assert loaded["hash"] == hashlib.sha256(w["file"].read_bytes()).hexdigest()[:10]  # A1111's Model hash
        from_file = np.load(tmp_path / f"{family}.npy")
        from_folder = draw(load_base_model(w["folder"], device="cpu"))
        assert from_folder.std() > 1, "the reference image is flat, so the comparison would prove nothing"
        # one process's thread count can flip a rounding: allow 1/255, far below what one wrong tensor does
        assert np.abs(from_file.astype(int) - from_folder.astype(int)).max() <= 1, family


def test_shipped_configs_build_the_published_sd15_and_sdxl_architectures():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    with init_empty_weights():  # shapes only: nothing is allocated
        def unet(family: str) -> int:
            return count(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(PIPELINES / family / "unet")))

        def vae(family: str) -> int:
            return count(AutoencoderKL.from_config(AutoencoderKL.load_config(PIPELINES / family / "vae")))

        def clip(family: str, sub: str, cls=CLIPTextModel) -> int:
            return count(cls(CLIPTextConfig.from_pretrained(PIPELINES / family / sub)))

        assert (unet("sd15"), vae("sd15"), clip("sd15", "text_encoder")) == (859_520_964, 83_653_863, 123_060_480)
        assert (unet("sdxl"), vae("sdxl"), clip("sdxl", "text_encoder")) == (2_567_463_684, 83_653_863, 123_060_480)
        assert clip("sdxl", "text_encoder_2", CLIPTextModelWithProjection) == 694_659_840
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49_408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's own ids
    padded = tokenizer("a cat", padding="max_length", truncation=True).input_ids
    assert len(padded) == 77 and padded[-1] == 49407 and len(tokenizer("cat " * 100, truncation=True).input_ids) == 77
    assert clip_tokenizer(pad_token="!")("a cat", padding="max_length").input_ids[-1] == 0  # SDXL's OpenCLIP


def test_a_checkpoint_the_shipped_configs_do_not_fit_is_refused_by_name(written):
    with pytest.raises(ValueError, match=r"'sd15-tiny.safetensors' does not have the SD 1.5 architecture this package "
                                         r"ships .*time_embedding.*Pass config=") as refused:
        load_base_model(written["sd15"]["file"])
    assert str(written["sd15"]["file"].parent) not in str(refused.value)
