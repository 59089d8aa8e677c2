"""The model folders people already have: an AUTOMATIC1111 / Forge / SD.Next or ComfyUI install, found by its
layout, and linked once (`loracle catalog import PATH`) so its LoRAs stay readable and its checkpoints
selectable. Links live in LORACLE_HOME/folders.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Where each tool keeps LoRAs and checkpoints, relative to its install folder.
LORA_FOLDERS = ("models/Lora", "models/LyCORIS", "models/loras")
CHECKPOINT_FOLDERS = ("models/Stable-diffusion", "models/checkpoints")
LINKS_FILE = "folders.json"


@dataclass
class Folders:
    """LoRA folders and checkpoint folders."""

    loras: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.loras or self.checkpoints)


def install_folders(root: Path) -> Folders:
    """The LoRA and checkpoint folders of the install at `root` (empty when `root` is not laid out like one)."""
    found = Folders([root / p for p in LORA_FOLDERS if (root / p).is_dir()],
                    [root / p for p in CHECKPOINT_FOLDERS if (root / p).is_dir()])
    return Folders([p.resolve() for p in found.loras], [p.resolve() for p in found.checkpoints])


def linked_folders(home: Path) -> Folders:
    """The folders linked so far (none before the first link)."""
    file = home / LINKS_FILE
    if not file.is_file():
        return Folders()
    data = json.loads(file.read_text())
    return Folders([Path(p) for p in data.get("loras", [])], [Path(p) for p in data.get("checkpoints", [])])


def link_folders(home: Path, folders: Folders) -> Folders:
    """Add these folders to the links (each once); all links after."""
    links = linked_folders(home)
    for mine, new in ((links.loras, folders.loras), (links.checkpoints, folders.checkpoints)):
        mine.extend(p for p in new if p not in mine)
    home.mkdir(parents=True, exist_ok=True)
    (home / LINKS_FILE).write_text(json.dumps({"loras": [str(p) for p in links.loras],
                                               "checkpoints": [str(p) for p in links.checkpoints]}, indent=2))
    return links
