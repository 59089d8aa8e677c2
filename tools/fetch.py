"""Downloading adapter files: resumable, sha256-verified against the catalog, into the adapters folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class FetchError(RuntimeError):
    """A download that cannot be completed or verified; the message names the adapter."""


@dataclass(frozen=True)
class FetchResult:
    ref: str
    path: Path
    status: str  # downloaded | resumed | present | unverified


def safe_file_name(external_id: str, file_name: str | None) -> str:
    base = Path(file_name or "adapter.safetensors").name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "adapter.safetensors"
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '_', external_id)}_{base}"


def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def fetch_adapter_file(
    card: dict[str, Any],
    adapters_dir: Path,
    *,
    token: str | None = None,
    timeout: float = 60.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> FetchResult:
    """Download one adapter's file, resuming a `.part` left by an interrupted run; refuse a hash mismatch."""
    ref = f"{card['source']}:{card['external_id']} ({card['name']})"
    url = card.get("download_url")
    if not url:
        raise FetchError(f"{ref}: the catalog has no download URL")
    expected = (card.get("file_sha256") or "").lower() or None
    adapters_dir.mkdir(parents=True, exist_ok=True)
    target = adapters_dir / safe_file_name(card["external_id"], card.get("file_name"))
    if target.exists() and expected and _sha256_of(target).hexdigest() == expected:
        return FetchResult(ref, target, "present")
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    digest = _sha256_of(partial) if offset else hashlib.sha256()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
            status = response.status_code
            if status == 200 and offset:  # the server ignored the range: start over
                offset, digest = 0, hashlib.sha256()
                partial.unlink()
            elif not (status in (200, 206) or (status == 416 and offset)):  # 416: the part is complete
                raise FetchError(f"{ref}: download failed with HTTP {status}")
            if status in (200, 206):
                total = int(response.headers.get("Content-Length", 0)) + offset or None
                with partial.open("ab") as handle:
                    for block in response.iter_bytes():  # as received, so an interruption keeps it all
                        handle.write(block)
                        digest.update(block)
                        if on_progress:
                            on_progress(handle.tell(), total)
    except httpx.HTTPError as exc:
        raise FetchError(f"{ref}: download interrupted ({exc}); run again to resume") from exc
    actual = digest.hexdigest()
    if expected and actual != expected:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{ref}: sha256 mismatch (expected {expected}, got {actual}); the file was discarded")
    os.replace(partial, target)
    return FetchResult(ref, target, "resumed" if offset else ("downloaded" if expected else "unverified"))
