"""Bulk embedding as a Ray Data job: `loracle catalog import PATH --ray ADDRESS` (and `catalog refine`).

The texts of an import are cut into the same slices the local embedder encodes (`text_slices`), the slices
are mapped by `map_batches` over an actor pool spread on the cluster's CPUs (each actor loads MiniLM once),
and the vectors come back to the caller, which writes them to PostgreSQL in batches as a local import does.
Same slices, same model, one torch thread per actor: the vectors equal the local import's. Needs the `ray` extra.
"""

from __future__ import annotations

import numpy as np
import ray

from loracle.tools.embedder import MINILM, encode_texts, load_minilm, text_slices


class _SliceEncoder:
    """One Ray Data actor: MiniLM loaded once, one torch thread (as the local bulk workers)."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.model = load_minilm()
        self.default_max = self.model.max_seq_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices, vectors = [], []
        for job, texts, positions, limit in zip(batch["job"], batch["texts"], batch["positions"], batch["max_tokens"]):
            vectors.append(encode_texts(self.model, list(texts), int(limit) or self.default_max))
            indices.extend((int(job), int(p)) for p in positions)
        return {"key": np.asarray(indices, dtype=np.int64), "vector": np.concatenate(vectors)}


class RayDataEmbedder:
    """MiniLM's bulk encoding on a Ray cluster; the same name and vectors as the local MiniLM embedder."""

    name = MINILM
    dims = 384

    def __init__(self, workers: int | None = None) -> None:
        if not ray.is_initialized():
            raise RuntimeError("connect to Ray first (ray.init(address=...))")
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray:
        return self.encode_many([(texts, max_tokens)])[0]

    def encode_many(self, jobs: list[tuple[list[str], int | None]]) -> list[np.ndarray]:
        """Several lists of texts (each with its token limit, None: the model's) in one Ray Data job; vectors per
        list, in order."""
        rows = [
            {"job": j, "texts": [texts[i] for i in part], "positions": part, "max_tokens": limit or 0}
            for j, (texts, limit) in enumerate(jobs) for part in text_slices(texts) if part
        ]
        out = [np.zeros((len(texts), self.dims), dtype=np.float32) for texts, _ in jobs]
        if not rows:
            return out
        dataset = ray.data.from_items(rows).map_batches(
            _SliceEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(rows))), num_cpus=1,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for (job, position), vector in zip(batch["key"], batch["vector"]):
                out[job][position] = vector
        return out
