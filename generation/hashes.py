"""The hashes A1111 writes into an image's `parameters`, so Civitai can link an image to the files that made it.

`Lora hashes: "name: hash"` carries the "addnet" hash of each adapter (sha256 of a safetensors file's tensor
data, the bytes after its JSON header, so editing the metadata keeps the hash), cut to 12 hex digits; `Model
hash` the sha256 of the whole checkpoint file, cut to 10. Each file is hashed once per (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

LORA_SHORT = 12
MODEL_SHORT = 10
_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of the whole file."""
    return _cached(str(Path(path).resolve()), *_stamp(path), False)


def addnet_sha256(path: str | os.PathLike) -> str:
    """sha256 of a safetensors file's data after its header (kohya's and A1111's LoRA hash); other files: the whole file."""
    after_header = Path(path).suffix.lower() == ".safetensors"
    return _cached(str(Path(path).resolve()), *_stamp(path), after_header)


def lora_short_hash(path: str | os.PathLike) -> str:
    return addnet_sha256(path)[:LORA_SHORT]


def model_short_hash(path: str | os.PathLike) -> str:
    return file_sha256(path)[:MODEL_SHORT]


def _stamp(path: str | os.PathLike) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=4096)
def _cached(path: str, size: int, mtime_ns: int, after_header: bool) -> str:
    """The digest of one version of a file (size and mtime are part of the cache key, not read here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if after_header:
            header_len = int.from_bytes(handle.read(8), "little")
            handle.seek(8 + header_len)
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
