"""Image files and their `images` rows exist together or not at all.

A run's PNG is first written under a staged name (`xx/<sha256>.<owner>-<random>.staged`, atomically), its row
is inserted, and only then is the file renamed to its final, content-addressed name (`xx/<sha256>.png`). A crash
before the insert leaves a staged file and no row; a crash between the insert and the rename leaves a row and a
staged file. `sweep` settles both at start-up: it completes the rename for a row whose file is missing, and
removes staged files of dead owners and final files no row names.

That is the local default (`FileImageStore`). A service whose API replicas share no folder (`loracle serve --ray`,
or LORACLE_IMAGE_STORE=postgres) keeps the bytes in PostgreSQL instead (`PostgresImageStore`): a run image's
bytes are inserted in the transaction that inserts its row, so the two are committed together or not at all.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
from PIL import Image

from loracle.db.image_blobs import delete_unused, get_blob, has_blob, put_blobs, sweep_unused
from loracle.db.server import Database
from loracle.generation.edit import load_image
from loracle.generation.output import png_bytes, write_atomic

ImageStoreKind = Literal["files", "postgres"]

UPLOADS = "uploads"  # input images of edits: no rows, never swept
_FINAL = re.compile(r"^[0-9a-f]{64}\.png$")
_STAGED = re.compile(r"^(?P<digest>[0-9a-f]{64})\.(?P<owner>\d+)-[0-9a-f]+\.staged$")


@dataclass(frozen=True)
class StagedFile:
    """A PNG written under its staged name; `path` is the final name (relative to the images folder)."""

    path: str
    staged: str
    sha256: str
    data: bytes = field(default=b"", repr=False, compare=False)  # the PNG, for a store that keeps bytes in rows


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
    return StagedFile(path, staged, digest, data)


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


def upload_path(tenant: str, data: bytes) -> str:
    """An uploaded input image's name: the tenant's uploads folder (the tenant name hashed, so any name is one
    safe path segment), then its content address."""
    return f"{UPLOADS}/{hashlib.sha256(tenant.encode()).hexdigest()[:24]}/{png_address(data)[0]}"


def decode_image(data: bytes, what: str, name: str) -> Image.Image:
    """Open PNG bytes fully (a broken image fails here, with its name, not mid-run)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.copy()
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"{what} {name} is not a readable image ({exc})") from None


class FileImageStore:
    """Images as files under the images folder (the local default)."""

    kind: ImageStoreKind = "files"

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir

    def stage(self, image: Image.Image, parameters: str, owner: int | None) -> StagedFile:
        return stage_png(image, parameters, self.images_dir, owner)

    def write(self, conn: psycopg.Connection, files: list[StagedFile]) -> None:
        """Inside the transaction that inserts the files' rows: nothing to do, the files are published after it."""

    def publish(self, files: list[StagedFile]) -> None:
        publish(self.images_dir, files)

    def discard(self, files: list[StagedFile]) -> None:
        discard(self.images_dir, files)

    def read(self, path: str) -> bytes:
        """The PNG bytes stored under `path`; FileNotFoundError when there are none."""
        return (self.images_dir / path).read_bytes()

    def exists(self, path: str) -> bool:
        return (self.images_dir / path).is_file()

    def open(self, path: str, what: str) -> Image.Image:
        """The image `path` names (relative to the store, or an absolute local file); ValueError naming `what`."""
        return load_image(self.images_dir / path, what)

    def put_upload(self, tenant: str, image: Image.Image, description: str) -> str:
        """Store an uploaded input image; its path."""
        data = png_bytes(image, description)
        path = upload_path(tenant, data)
        if not (self.images_dir / path).exists():
            write_atomic(self.images_dir / path, data)
        return path

    def remove(self, paths: list[str]) -> None:
        """Run images whose rows were deleted (no other row names them)."""
        for path in paths:
            (self.images_dir / path).unlink(missing_ok=True)

    def sweep(self, referenced: Callable[[list[str]], set[str]], alive_owners: set[int]) -> SweepReport:
        return sweep(self.images_dir, referenced, alive_owners)


class PostgresImageStore:
    """Images as rows of `image_blobs` (migration 011), so every API replica over the database serves them.
    Absolute paths (a local CLI's input image) are still read from disk."""

    kind: ImageStoreKind = "postgres"

    def __init__(self, db: Database) -> None:
        self.db = db

    def stage(self, image: Image.Image, parameters: str, owner: int | None) -> StagedFile:
        data = png_bytes(image, parameters)
        path, digest = png_address(data)
        return StagedFile(path, "", digest, data)  # staged in memory until its row's transaction

    def write(self, conn: psycopg.Connection, files: list[StagedFile]) -> None:
        """Inside the transaction that inserts the files' rows: their bytes, committed with them or not at all."""
        put_blobs(conn, {file.path: file.data for file in files}, "image")

    def publish(self, files: list[StagedFile]) -> None:
        """Nothing left to do: the bytes were committed with the rows."""

    def discard(self, files: list[StagedFile]) -> None:
        """Nothing was written outside the rolled-back transaction."""

    def read(self, path: str) -> bytes:
        with self.db.connection() as conn:
            data = get_blob(conn, path)
        if data is None:
            raise FileNotFoundError(f"no stored image {path}")
        return data

    def exists(self, path: str) -> bool:
        with self.db.connection() as conn:
            return has_blob(conn, path)

    def open(self, path: str, what: str) -> Image.Image:
        if Path(path).is_absolute():
            return load_image(path, what)
        try:
            return decode_image(self.read(path), what, path)
        except FileNotFoundError:
            raise ValueError(f"{what} not found: {path}") from None

    def put_upload(self, tenant: str, image: Image.Image, description: str) -> str:
        data = png_bytes(image, description)
        path = upload_path(tenant, data)
        with self.db.connection() as conn:
            put_blobs(conn, {path: data}, "upload")
        return path

    def remove(self, paths: list[str]) -> None:
        with self.db.connection() as conn:
            delete_unused(conn, paths)

    def sweep(self, referenced: Callable[[list[str]], set[str]], alive_owners: set[int]) -> SweepReport:
        """Blobs no row names (a crash between deleting a thread's rows and its blobs); nothing is ever staged."""
        with self.db.connection() as conn:
            return SweepReport(removed_orphans=sweep_unused(conn))


ImageStore = FileImageStore | PostgresImageStore


def open_image_store(kind: ImageStoreKind, images_dir: Path, db: Database) -> ImageStore:
    """The store `kind` names: files under `images_dir`, or blobs in `db`."""
    return PostgresImageStore(db) if kind == "postgres" else FileImageStore(images_dir)
