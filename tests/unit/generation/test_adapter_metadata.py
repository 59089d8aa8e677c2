"""A LoRA file's own metadata is read with its tensors: the family it declares is refused on another base even
when every shape happens to fit."""

from __future__ import annotations

import pytest

from loracle.generation.adapters import AdapterIncompatibleError, AdapterManager
from loracle.generation.base_models import build_tiny_model
from loracle.generation.synthetic import write_synthetic_lora


def test_declared_family_read_from_the_metadata(tmp_path):
    model = build_tiny_model()
    write_synthetic_lora(tmp_path / "claims_xl.safetensors", model, seed=1, family="sdxl")  # SD 1.5 shapes
    write_synthetic_lora(tmp_path / "plain.safetensors", model, seed=1)
    manager = AdapterManager(model, [tmp_path])
    assert manager.get("plain").metadata, "the file's metadata was dropped"
    with pytest.raises(AdapterIncompatibleError, match=r"'claims_xl'.*made for SDXL"):
        manager.get("claims_xl")
