"""Where a catalog adapter's file is, and whether it can be used, checked before it goes near the model.

A catalog record names its file (`file_name`, or `local_path` once fetched); the name must stay inside the
adapter folders (no absolute path, no `..`, no symlink out), be a `.safetensors` file (pickles can run code
when loaded) and hold a sound safetensors header. A problem is described with the record's own file name,
never a folder of this machine. Cheap: a stat and one small read per file.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from loracle.db.catalog import escapes_folder

MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own bound on the JSON header


@dataclass(frozen=True)
class AdapterFile:
    """`file`: the name to load it by, relative to the folder it is in (None: not here). `problem`: why the
    record's file cannot be used (None: it can, or it is simply not downloaded). `real`: the file itself, to
    tell two records on one file apart; never shown."""

    file: str | None = None
    problem: str | None = None
    real: Path | None = None


def unsafe_name(name: str) -> str | None:
    """Why a file name from a catalog record is not a plain name inside the adapter folders (None: it is)."""
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "its file name holds control characters"
    if escapes_folder(name):
        return "its file name points outside the adapter folders"  # the name itself may be a path of this machine
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why this is not a sound safetensors file (None: its header parses and its tensors fit in the file)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            return "is not a safetensors file (pickle data, or a damaged header)"
        try:
            header = json.loads(handle.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "has a damaged safetensors header"
    if not ends:
        return "holds no tensors"
    if 8 + length + max(ends) > size:
        return "is truncated"
    return None


def locate_adapter(local_path: str | None, file_name: str | None, adapter_dirs: list[Path]) -> AdapterFile:
    """The record's file in the adapter folders (first folder that has it), or the problem with it.

    A file that is not there is a problem only when the record says it was fetched (`local_path`); a catalog
    entry that was never downloaded (only `file_name`) is simply not available here."""
    missing = None
    for name, claimed in ((local_path, True), (file_name, False)):
        if not name:
            continue
        if problem := unsafe_name(name):
            return AdapterFile(problem=problem)
        for folder in adapter_dirs:
            candidate = folder / name
            if not os.path.lexists(candidate):
                continue
            real = Path(os.path.realpath(candidate))
            if not real.is_relative_to(os.path.realpath(folder)):
                return AdapterFile(problem=f"its file {name!r} links outside the adapter folders")
            if not real.is_file():
                return AdapterFile(problem=f"its file {name!r} is not a regular file")
            if real.suffix.lower() != ".safetensors":
                return AdapterFile(problem=f"its file {name!r} is not a .safetensors file (other formats can run code "
                                           "when loaded)")
            if problem := safetensors_problem(real):
                return AdapterFile(problem=f"its file {name!r} {problem}")
            return AdapterFile(file=name, real=real)
        if claimed:
            missing = f"its file {name!r} is missing from the adapter folders"
    return AdapterFile(problem=missing)
