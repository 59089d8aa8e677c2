"""Image files and their `images` rows exist together or not at all.

A run's PNG is first written under a staged name (`xx/<sha256>.<owner>-<random>.staged`, atomically), its row
is inserted, and only then is the file renamed to its final, content-addressed name (`xx/<sha256>.png`). A crash
before the insert leaves a staged file and no row; a crash between the insert and the rename leaves a row and a
staged file. `sweep` settles both at start-up: it completes the rename for a row whose file is missing, and
removes staged files of dead owners and final files no row names.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from loracle.generation.output import png_bytes, write_atomic

UPLOADS = "uploads"  # input images of edits: no rows, never swept
_FINAL = re.compile(r"^[0-9a-f]{64}\.png$")
_STAGED = re.compile(r"^(?P<digest>[0-9a-f]{64})\.(?P<owner>\d+)-[0-9a-f]+\.staged$")


@dataclass(frozen=True)
class StagedFile:
    """A PNG written under its staged name; `path` is the final name (relative to the images folder)."""

    path: str
    staged: str
    sha256: str


def png_address(data: bytes) -> tuple[str, str]:
    """Where a PNG lives under the images folder, named by its content: (relative path, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}.png", digest


def stage_png(image: Image.Image, parameters: str, images_dir: Path, owner: int | None) -> StagedFile:
    """Write the PNG (with its A1111 `parameters` chunk) under a staged name; `owner` (0: none) is in the name so a
    sweep can tell a live process's files from a dead one's."""
    data = png_bytes(image, parameters)
    path, digest = png_address(data)
    staged = f"{digest[:2]}/{digest}.{owner or 0}-{uuid.uuid4().hex[:12]}.staged"
    write_atomic(images_dir / staged, data)
    return StagedFile(path, staged, digest)


def publish(images_dir: Path, files: Iterable[StagedFile]) -> None:
    """After their rows are committed: each staged file under its final name (an identical file may be there)."""
    for file in files:
        os.replace(images_dir / file.staged, images_dir / file.path)


def discard(images_dir: Path, files: Iterable[StagedFile]) -> None:
    """When their rows could not be written: the staged files go."""
    for file in files:
        (images_dir / file.staged).unlink(missing_ok=True)


@dataclass
class SweepReport:
    published: int = 0  # rows whose rename a crash interrupted, completed now
    removed_staged: int = 0  # staged files of dead owners without a row
    removed_orphans: int = 0  # final files no row names

    def __bool__(self) -> bool:
        return bool(self.published or self.removed_staged or self.removed_orphans)


def sweep(images_dir: Path, referenced: Callable[[list[str]], set[str]], alive_owners: set[int]) -> SweepReport:
    """Settle what crashes left. `referenced(paths)`: which of these final paths a row names, asked after the
    folder was listed, so a file published after the listing was committed before the question and is kept."""
    report = SweepReport()
    finals: list[str] = []
    staged: list[tuple[str, str, int]] = []
    if not images_dir.is_dir():
        return report
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name != UPLOADS):
        for entry in folder.iterdir():
            relative = f"{folder.name}/{entry.name}"
            if _FINAL.match(entry.name):
                finals.append(relative)
            elif match := _STAGED.match(entry.name):
                staged.append((relative, f"{folder.name}/{match['digest']}.png", int(match["owner"])))
    dead_staged = [(s, final) for s, final, owner in staged if owner not in alive_owners]
    named = referenced(finals + [final for _, final in dead_staged])
    for relative, final in dead_staged:
        if final in named and not (images_dir / final).exists():
            os.replace(images_dir / relative, images_dir / final)
            report.published += 1
        else:
            (images_dir / relative).unlink(missing_ok=True)
            report.removed_staged += 1
    for relative in finals:
        if relative not in named:
            (images_dir / relative).unlink(missing_ok=True)
            report.removed_orphans += 1
    return report
