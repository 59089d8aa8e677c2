"""The first stage's ranked lists learned from real prompt -> adapter choices (`loracle rank train`).

MiniLM has never seen how people describe what they want next to how adapter authors describe what
they made. Two lists, fused with the others by tools/retrieve.py (strategy "trained"), learn it:
- "adapted": the query's MiniLM vector through a trained linear map, searched over the stored card
  vectors (kind `kind`, "full+refined" by default). Only the query side is learned, so the catalog is
  never re-embedded and the map is one (dims x dims) matrix.
- "neighbours": the adapters picked by the training prompts most like this one, each scored by the
  summed cosine of the prompts that picked it (tools/pick_prior.SourceCounts.votes).
`weights` set both lists' fusion weights and may reweigh the unlearned lists beside them ("full", "head":
tools/retrieve.FUSED_LISTS names them); the plain `fused` strategy keeps its own weights.

The artifact is two files beside the ranker (tools/artifacts/): `first_stage.safetensors` (the map)
and `first_stage.json` (the neighbours' int8 vectors and picks as catalog keys, settings, versions,
held-out metrics, and the sha256 of the map's values, so the two always come from one training run).
No pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from loracle.tools.pick_prior import SourceCounts

FORMAT = "loracle-first-stage"
VERSION = 1
MAP_FILE = "first_stage.safetensors"
META_FILE = "first_stage.json"
MAP_TENSOR = "query_map"


class FirstStageError(ValueError):
    pass


def artifacts_dir() -> Path:
    """The folder of the learned artifacts: the ranker's (LORACLE_RANKER_PATH's folder, or tools/artifacts)."""
    configured = os.environ.get("LORACLE_RANKER_PATH")
    return Path(configured).parent if configured else Path(__file__).resolve().parent / "artifacts"


@dataclass
class LearnedLists:
    """A trained query map and the training prompts' picks, with how their lists join the fusion."""

    query_map: np.ndarray  # (dims, dims): adapted = normalise(normalise(query) @ query_map)
    neighbours: SourceCounts
    kind: str = "full+refined"  # the stored vectors the adapted query is searched over
    neighbour_count: int = 20
    weights: dict[str, float] = field(default_factory=lambda: {"adapted": 1.0, "neighbours": 1.0})  # by list name
    meta: dict[str, Any] = field(default_factory=dict)

    def adapt(self, vectors: np.ndarray) -> np.ndarray:
        """Unit query vectors mapped towards the card vectors of what people picked for such queries."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[-1] != self.query_map.shape[0]:
            raise FirstStageError(f"the query map takes {self.query_map.shape[0]} dims, the query has {vectors.shape[-1]}")
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        mapped = vectors @ self.query_map
        return mapped / np.maximum(np.linalg.norm(mapped, axis=-1, keepdims=True), 1e-12)

    def neighbour_picks(self, vector: np.ndarray) -> list[tuple[str, float]]:
        """(catalog key, summed cosine) of what the most similar training prompts picked, best first."""
        votes, _ = self.neighbours.votes(np.asarray(vector, dtype=np.float32), self.neighbour_count)
        return sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))

    def save(self, folder: Path) -> None:
        """Write both files into `folder`; `meta` then holds the map's sha256 the JSON names."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({MAP_TENSOR: np.ascontiguousarray(self.query_map, dtype=np.float32)}, str(folder / MAP_FILE),
                  metadata={"format": FORMAT, "version": str(VERSION)})
        self.meta.update({"format": FORMAT, "version": VERSION, "map_sha256": map_digest(self.query_map), "kind": self.kind,
                          "neighbour_count": self.neighbour_count, "weights": self.weights})
        meta = {**self.meta, "neighbours": self.neighbours.neighbours_json()}
        (folder / META_FILE).write_text(json.dumps(meta, separators=(",", ":")) + "\n", encoding="utf-8")


def map_digest(query_map: np.ndarray) -> str:
    """sha256 of the map's float32 values and shape: the file's bytes are not stable (safetensors writes its
    header's metadata in no fixed order), its values are."""
    values = np.ascontiguousarray(query_map, dtype=np.float32)
    return hashlib.sha256(str(values.shape).encode() + values.tobytes()).hexdigest()


def load_from(folder: Path) -> LearnedLists:
    """The artifact in `folder`, checked: format, the map's hash and shape, the neighbours' arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    map_path, meta_path = folder / MAP_FILE, folder / META_FILE
    if not map_path.is_file() or not meta_path.is_file():
        raise FirstStageError(f"no trained first stage ({MAP_FILE}, {META_FILE}) in the artifacts folder; run `loracle rank train`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FirstStageError(f"{META_FILE} is not JSON ({error})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise FirstStageError(f"{META_FILE} is not a {FORMAT} v{VERSION} artifact")
    try:
        query_map = load_file(str(map_path))[MAP_TENSOR]
        neighbours = SourceCounts.from_neighbours_json(meta.pop("neighbours"))
    except (SafetensorError, KeyError, TypeError, ValueError) as error:
        raise FirstStageError(f"the trained first stage does not load ({error!r})") from None
    if meta.get("map_sha256") != map_digest(query_map):
        raise FirstStageError(f"{MAP_FILE} is not the one {META_FILE} was written with; run `loracle rank train` again")
    if query_map.ndim != 2 or query_map.shape[0] != query_map.shape[1]:
        raise FirstStageError(f"the query map must be square, it is {query_map.shape}")
    return LearnedLists(query_map, neighbours, meta["kind"], int(meta["neighbour_count"]),
                        {k: float(v) for k, v in meta["weights"].items()}, meta)


@lru_cache(maxsize=4)
def _load(folder: str, mtime: float) -> LearnedLists:
    return load_from(Path(folder))


def load_learned_lists(folder: Path | None = None) -> LearnedLists:
    """The trained first stage of the artifacts folder, loaded once per version of its files."""
    folder = folder or artifacts_dir()
    meta = folder / META_FILE
    return _load(str(folder), meta.stat().st_mtime if meta.is_file() else 0.0)


__all__ = ["FirstStageError", "LearnedLists", "artifacts_dir", "load_from", "load_learned_lists"]
