"""An AUTOMATIC1111 install, pointed at once (`loracle catalog import PATH`), gives its LoRAs to the catalog with
their A1111 sidecars and its LoRA and checkpoint folders to the engine and /sdapi/v1/sd-models."""

from __future__ import annotations

import json
from pathlib import Path

from loracle.agent.catalog import import_file
from loracle.agent.folders import linked_folders
from loracle.agent.runtime import resolve_base
from loracle.agent.service import open_agent
from loracle.agent.settings import Settings
from loracle.agent.webui import list_checkpoints
from loracle.db.catalog import adapters_by_file
from loracle.generation.adapters import AdapterManager
from loracle.generation.base_models import build_tiny_model
from loracle.generation.synthetic import write_synthetic_lora

# What A1111's LoRA card editor writes next to NAME.safetensors as NAME.json.
SIDECAR = {"description": "Ink wash painting, soft grey gradients.", "sd version": "SD1",
           "activation text": "inkwash, sumi-e", "preferred weight": 0.6, "notes": "works best at 512px"}


def a1111_install(root: Path) -> Path:
    """stable-diffusion-webui's model layout: a LoRA sorted into a subfolder with its sidecar, one checkpoint."""
    loras = root / "models" / "Lora" / "styles"
    loras.mkdir(parents=True)
    write_synthetic_lora(loras / "inkwash.safetensors", build_tiny_model(), seed=5)
    (loras / "inkwash.json").write_text(json.dumps(SIDECAR))
    checkpoints = root / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    (checkpoints / "dreamy_v2.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # listed, never read
    return root


def test_an_a1111_install_imports_its_loras_with_sidecars_and_links_its_folders(tmp_path, database_url) -> None:
    install = a1111_install(tmp_path / "stable-diffusion-webui")
    settings = Settings(home=tmp_path / "home", database_url=database_url, base_model="tiny")
    with open_agent(settings) as agent:
        report, total = import_file(agent, install, embed=False)
        again, _ = import_file(agent, install, embed=False)
        with agent.db.connection() as conn:
            cards = adapters_by_file(conn, ["inkwash.safetensors"], [])
        checkpoints = [c.filename for c in list_checkpoints(agent)]
    assert (report.inserted, report.rejected, total) == (1, [], 1)
    assert (again.inserted, again.unchanged) == (0, 1)
    [card] = cards
    assert card["trigger_words"] == ["inkwash", "sumi-e"] and card["recommended_weight"] == 0.6
    assert card["description"] == SIDECAR["description"] and card["local_path"] == "styles/inkwash.safetensors"

    links = linked_folders(settings.home)  # linked once, however often the install is imported
    assert links.loras == [(install / "models" / "Lora").resolve()]
    assert links.checkpoints == [(install / "models" / "Stable-diffusion").resolve()]
    assert checkpoints == ["tiny", "dreamy_v2.safetensors"]
    # the engine finds the catalog's file in the linked folder and can load it on the tiny model
    adapters = AdapterManager(build_tiny_model(), resolve_base(settings).adapter_dirs)
    assert adapters.get(card["local_path"]).path == install.resolve() / "models" / "Lora" / "styles" / "inkwash.safetensors"


def test_a_plain_folder_is_imported_but_not_linked(tmp_path, database_url) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    write_synthetic_lora(folder / "inkwash.safetensors", build_tiny_model(), seed=5)
    settings = Settings(home=tmp_path / "home", database_url=database_url, base_model="tiny")
    with open_agent(settings) as agent:
        report, _ = import_file(agent, folder, embed=False)
    assert report.inserted == 1 and not linked_folders(settings.home)
