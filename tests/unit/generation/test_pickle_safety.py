"""Pickle stays safe when allowed: a file whose `__reduce__` runs code is refused by `weights_only` loading (the
code never runs), and a model folder with only pickle weights is refused unless pickle is allowed."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from loracle.generation.adapters import AdapterError, AdapterManager
from loracle.generation.base_models import PickleRefusedError, build_tiny_model, load_base_model, save_base_model


class _RunsCode:
    """Unpickling this calls Path.touch on the marker: arbitrary code, as a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _hostile(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    return path


def test_allowed_pickle_adapter_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    _hostile(tmp_path / "evil.pt", marker)
    manager = AdapterManager(build_tiny_model(), [tmp_path], allow_pickle=True)
    with pytest.raises(AdapterError, match="evil.pt.*could not be read: UnpicklingError"):
        manager.get("evil.pt")
    assert not marker.exists(), "unpickling ran the file's code"


def test_allowed_pickle_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    _hostile(tmp_path / "evil.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_base_model(tmp_path / "evil.ckpt", allow_pickle=True)
    assert not marker.exists(), "unpickling ran the file's code"


@pytest.mark.parametrize("suffix", [".ckpt", ".PT", ".pth", ".bin", ".pkl"])
def test_pickle_suffixes_refused_by_default(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"never read")
    with pytest.raises(PickleRefusedError, match=f"model{suffix}"):
        load_base_model(path)


def test_pickle_only_model_folder_refused(tmp_path):
    """A diffusers folder whose UNet has only a .bin file: refused by name unless pickle is allowed."""
    folder = save_base_model(build_tiny_model(), tmp_path / "model")
    unet = folder / "unet"
    weights = next(unet.glob("*.safetensors"))
    from safetensors.torch import load_file

    torch.save(load_file(weights), unet / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(PickleRefusedError, match=r"unet.*only pickle formats.*allow_pickle=True"):
        load_base_model(folder)
    assert load_base_model(folder, allow_pickle=True).family == "sd15"
