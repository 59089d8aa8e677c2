"""Shared tiny-model fixtures for the generation tests (CPU, seeded, offline)."""

from __future__ import annotations

import pytest
import torch

from loracle.generation.base_models import build_tiny_model
from loracle.generation.synthetic import write_synthetic_lora


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    return build_tiny_model("sd15", seed=0)


@pytest.fixture(scope="session")
def tiny_xl():
    return build_tiny_model("sdxl", seed=0)


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory, tiny, tiny_xl):
    d = tmp_path_factory.mktemp("loras")
    for i in range(4):
        write_synthetic_lora(d / f"style{i}.safetensors", tiny, seed=100 + i)
    write_synthetic_lora(d / "same_diffusers.safetensors", tiny, seed=7, text_encoder=True)
    write_synthetic_lora(d / "same_kohya.safetensors", tiny, seed=7, fmt="kohya", text_encoder=True)
    write_synthetic_lora(d / "xl_style.safetensors", tiny_xl, seed=3, fmt="kohya")
    return d
