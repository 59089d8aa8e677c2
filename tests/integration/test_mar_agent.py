"""`LORACLE_BASE_MODEL=world-mar loracle generate ...`: the agent plans, retrieves the MAR's own style adapters
from the real Postgres catalog, composes, samples with MAREngine and records the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from loracle.generation.world.paths import world_paths

paths = world_paths()
pytestmark = pytest.mark.skipif(not (paths.mar / "loracle_model.json").is_file(), reason="world MAR not built")


def test_generate_with_world_mar(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(home),
           "LORACLE_BASE_MODEL": "world-mar", "LORACLE_STEPS": "8", "LORACLE_N_IMAGES": "2"}
    done = subprocess.run([sys.executable, "-m", "loracle.cli.main", "generate", "a bold seven, boldface", "--seed", "3",
                           "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith("{"), (done.stdout[:500], done.stderr[-2000:])
    result = json.loads(done.stdout)
    assert len(result["images"]) == 2
    for path in result["images"]:
        with Image.open(path) as im:
            assert im.size == (16, 16)
            assert "Generator: MAR" in im.info["parameters"] and "Digits MAR 1.0" in im.info["parameters"]
    per_attempt = 2 * 2 * 8  # 2 images x (cond + uncond) x 8 AR steps; a retry (inspection) samples again
    assert result["nfe"] >= per_attempt and result["nfe"] % per_attempt == 0, result["nfe"]
    picked = {p["name"] for ps in result["picks"].values() for p in ps}
    if (paths.mar_loras / "digits_mar_bold.safetensors").is_file():
        assert "Boldface Digits (MAR)" in picked, picked
    assert not any("(MAR)" not in name for name in picked), "only adapters made for the MAR are retrieved"


def test_world_mar_autoguidance_guides_with_itself_without_adapters(database_url: str, tmp_path: Path) -> None:
    """MAR has no separate guide model: autoguidance asks the MAR itself, adapters off (adapter guidance)."""
    env = {**os.environ, "LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"),
           "LORACLE_BASE_MODEL": "world-mar", "LORACLE_STEPS": "2", "LORACLE_N_IMAGES": "1", "LORACLE_GUIDANCE": "auto"}
    done = subprocess.run([sys.executable, "-m", "loracle.cli.main", "generate", "a bold three", "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    with Image.open(result["images"][0]) as im:
        parameters = im.info["parameters"]
    assert "Guidance: auto" in parameters and "Guide: no_adapters" in parameters, parameters
    assert result["nfe"] % (2 * 2) == 0, result["nfe"]  # cond and guide branches x 2 AR steps per image
