"""What a single-file checkpoint takes from its config folder, in-process and fast (the offline, fresh-machine
load and the image comparison are tests/integration/test_single_file_checkpoint.py): the weights (from
.safetensors, or from a trusted .ckpt's state_dict), the folder's own tokenizer and scheduler, the shipped ones
where the folder has none, SDXL's second encoder and tokenizer, and which configs an architecture error names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loracle.generation.base_models import PIPELINES, build_tiny_model, load_base_model
from tests.integration.ldm_layout import write_checkpoint, write_configs


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sd15")
    model = build_tiny_model("sd15", seed=3)
    file = write_checkpoint(model, root / "tiny-one.safetensors")
    config = write_configs(model, root / "configs")
    tokenizer = model.tokenizer
    tokenizer.model_max_length = 16  # this folder's own tokenizer, told apart from the shipped one (77)
    tokenizer.save_pretrained(config / "tokenizer")
    scheduler = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.0", **model.scheduler_config,
                 "num_train_timesteps": 700}
    (config / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return model, file, config


def _same_unet(loaded, model) -> None:
    expected = model.unet.state_dict()
    got = loaded.unet.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_safetensors_checkpoint_reads_its_config_folder(sd15) -> None:
    model, file, config = sd15
    loaded = load_base_model(file, config=config, device="cpu")
    assert (loaded.family, loaded.name, loaded.weights_file) == ("sd15", "tiny-one", file)
    _same_unet(loaded, model)
    assert loaded.tokenizer.model_max_length == 16, "the folder's own tokenizer"
    assert loaded.scheduler_config["num_train_timesteps"] == 700
    assert not any(k.startswith("_") for k in loaded.scheduler_config), "diffusers' bookkeeping keys are not settings"
    assert loaded.text_encoder_2 is None and loaded.tokenizer_2 is None


def test_a_trusted_ckpt_loads_its_state_dict(sd15, tmp_path: Path) -> None:
    model, file, config = sd15
    ckpt = tmp_path / "tiny-two.ckpt"
    torch.save({"state_dict": load_file(str(file))}, ckpt)
    loaded = load_base_model(ckpt, config=config, allow_pickle=True, device="cpu")
    assert (loaded.family, loaded.name) == ("sd15", "tiny-two")
    _same_unet(loaded, model)


def test_without_its_own_tokenizer_and_scheduler_the_shipped_ones_are_used(sd15, tmp_path: Path) -> None:
    model, file, config = sd15
    bare = tmp_path / "bare"
    shutil.copytree(config, bare, ignore=shutil.ignore_patterns("tokenizer", "scheduler"))
    loaded = load_base_model(file, config=bare, device="cpu")
    assert loaded.tokenizer.model_max_length == 77 and len(loaded.tokenizer) == 49_408
    shipped = json.loads((PIPELINES / "sd15" / "scheduler" / "scheduler_config.json").read_text())
    assert loaded.scheduler_config == {k: v for k, v in shipped.items() if not k.startswith("_")}


def test_an_architecture_error_names_the_configs_it_was_checked_against(sd15, tmp_path: Path) -> None:
    _, file, _ = sd15
    with pytest.raises(ValueError, match="architecture this package ships"):
        load_base_model(file, device="cpu")
    wider = tmp_path / "wider"
    shutil.copytree(sd15[2], wider)
    unet = json.loads((wider / "unet" / "config.json").read_text())
    unet["block_out_channels"] = [2 * c for c in unet["block_out_channels"]]
    (wider / "unet" / "config.json").write_text(json.dumps(unet))
    with pytest.raises(ValueError, match="architecture of the given config folder"):
        load_base_model(file, config=wider, device="cpu")


def test_an_sdxl_checkpoint_gets_both_encoders_and_tokenizers(tmp_path: Path) -> None:
    model = build_tiny_model("sdxl", seed=4)
    file = write_checkpoint(model, tmp_path / "tiny-xl.safetensors")
    config = write_configs(model, tmp_path / "configs")
    shutil.rmtree(config / "tokenizer_2")
    loaded = load_base_model(file, config=config, device="cpu")
    assert loaded.family == "sdxl"
    expected = model.text_encoder_2.state_dict()
    got = loaded.text_encoder_2.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected), "the second encoder is OpenCLIP's, not the first"
    assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token == model.tokenizer.pad_token
