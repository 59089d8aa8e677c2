"""What AUTOMATIC1111 clients ask of the agent besides a turn: its samplers, the LoRA files it can apply, the
checkpoints it can switch to, and the generation parameters inside a PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loracle.agent.errors import InvalidInput, NotFound, agent_errors
from loracle.agent.folders import linked_folders

if TYPE_CHECKING:
    from loracle.agent.service import Agent

# A1111's sampler names -> loracle's schedulers (generation/schedulers.SCHEDULERS), and A1111's other spellings.
SAMPLERS = {"DDIM": "ddim", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M Karras": "dpmpp_2m_karras", "Euler": "euler", "Euler a": "euler_a"}
SAMPLER_ALIASES = {"DDIM": ["ddim"], "DPM++ 2M": ["k_dpmpp_2m"], "DPM++ 2M Karras": ["k_dpmpp_2m_ka"],
                   "Euler": ["k_euler"], "Euler a": ["k_euler_a"]}
# A1111's schedule types (its `scheduler` field since 1.9) that mean something here.
SCHEDULE_TYPES = {"automatic": "Automatic", "karras": "Karras"}


def scheduler_for(sampler: str | None, schedule: str | None) -> tuple[str | None, list[str]]:
    """loracle's scheduler for an A1111 sampler and schedule type (None: the settings' own), and the fields
    that had no effect. ValueError names the samplers there are for one that is unknown."""
    ignored: list[str] = []
    if not sampler:
        name = None
    else:
        lookup = {k.lower(): k for k in SAMPLERS} | {a: k for k, aliases in SAMPLER_ALIASES.items() for a in aliases}
        name = lookup.get(sampler.strip().lower())
        if name is None:
            raise ValueError(f"Sampler not found: {sampler!r}; available: {', '.join(SAMPLERS)}")
    kind = (schedule or "automatic").strip().lower()
    if kind == "karras" and name == "DPM++ 2M":
        name = "DPM++ 2M Karras"
    elif kind != "automatic":
        ignored.append(f"scheduler {schedule!r} (only Karras with DPM++ 2M is available)")
    return (SAMPLERS[name] if name else None), ignored


@dataclass
class LoraFileInfo:
    """One LoRA file the engine can apply, as A1111 lists it: `name` is what a `<lora:name:w>` tag says."""

    name: str
    alias: str
    path: str  # relative to its adapter folder: no server paths leave the service
    metadata: dict[str, str]
    card: dict[str, Any] | None = None  # its catalog entry, when it has one


def list_loras(agent: Agent) -> list[LoraFileInfo]:
    """Every .safetensors file in the adapter folders, with its header metadata and catalog card."""
    from loracle.db.catalog import adapters_by_file
    from loracle.tools.importers.safetensors_dir import read_metadata

    found: dict[str, tuple[Path, str]] = {}
    for folder in agent.context.adapter_dirs:
        if folder.is_dir():
            for file in sorted(folder.rglob("*.safetensors")):
                found.setdefault(file.stem, (file, file.relative_to(folder).as_posix()))
    with agent_errors(), agent.db.connection() as conn:
        cards = adapters_by_file(conn, [f.name for f, _ in found.values()], [r for _, r in found.values()])
    by_file = {c["local_path"] or c["file_name"]: c for c in cards} | {c["file_name"]: c for c in cards if c["file_name"]}
    items = []
    for name, (file, relative) in found.items():
        try:
            metadata = read_metadata(file)
        except Exception:  # noqa: BLE001 - a damaged header is listed without metadata, as A1111 does
            metadata = {}
        card = by_file.get(relative) or by_file.get(file.name)
        items.append(LoraFileInfo(name=name, alias=name, path=relative, metadata=metadata, card=card))
    return items


@dataclass
class Checkpoint:
    """A base model one can switch to, as A1111's sd-models lists it."""

    title: str  # "name.safetensors [hash]", or the spec of a built-in model
    model_name: str
    filename: str  # relative to its folder (a built-in model: its spec)
    spec: str = field(repr=False)  # what LORACLE_BASE_MODEL would say
    hash: str | None = None
    sha256: str | None = None


def _file_checkpoint(path: Path, folder: Path, *, hashed: bool) -> Checkpoint:
    from loracle.generation.hashes import file_sha256

    relative = path.relative_to(folder).as_posix()
    sha = file_sha256(path) if hashed else None
    return Checkpoint(title=f"{relative} [{sha[:10]}]" if sha else relative,
                      model_name=Path(relative).with_suffix("").as_posix().replace("/", "_"), filename=relative,
                      spec=str(path), hash=sha[:10] if sha else None, sha256=sha)


def list_checkpoints(agent: Agent) -> list[Checkpoint]:
    """The current base model first (hashed, as its images name it), then every .safetensors checkpoint in
    LORACLE_CHECKPOINT_DIRS and the linked install folders (hashed only once selected: a checkpoint is GBs)."""
    spec = agent.settings.base_model
    folders = [f.resolve() for f in (*agent.settings.checkpoint_dirs, *linked_folders(agent.settings.home).checkpoints)]
    current = Path(spec).resolve()
    if current.is_file():
        home = next((f for f in folders if current.is_relative_to(f)), current.parent)
        items = [_file_checkpoint(current, home, hashed=True)]
    else:  # a built-in model or a diffusers folder: named by its spec
        items = [Checkpoint(title=spec, model_name=Path(spec).name or spec, filename=Path(spec).name or spec, spec=spec)]
    seen = {items[0].spec}
    for folder in folders:
        for file in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []:
            if str(file) not in seen:
                seen.add(str(file))
                items.append(_file_checkpoint(file, folder, hashed=False))
    return items


def find_checkpoint(agent: Agent, name: str) -> Checkpoint:
    """The checkpoint a client named by its title, file name or model name (A1111 accepts each)."""
    wanted = name.strip()
    for item in list_checkpoints(agent):
        if wanted in (item.title, item.filename, item.model_name, item.spec, Path(item.filename).name,
                      item.title.split(" [")[0]):
            return item
    raise NotFound(f"model {name!r} not found; see /sdapi/v1/sd-models")


def png_info(data: bytes) -> tuple[str, dict[str, str], dict[str, str]]:
    """A PNG's generation `parameters` text, its other text chunks, and the parameters as fields."""
    from PIL import Image, UnidentifiedImageError

    from loracle.generation.output import parse_parameters

    try:
        with Image.open(io.BytesIO(data)) as image:
            info = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"image is not a readable image ({exc})", field="image") from None
    text = info.pop("parameters", "")
    return text, info, parse_parameters(text) if text else {}


def parameter_fields(text: str) -> dict[str, str]:
    """An image's `parameters` text as fields (see `png_info`)."""
    from loracle.generation.output import parse_parameters

    return parse_parameters(text)
