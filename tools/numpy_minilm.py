"""MiniLM's forward pass in numpy, for the few short texts of a query.

Loading sentence-transformers means importing torch and transformers: 5-7 s of a cold `loracle search`
on this project's 2-core machines, for a model whose one query runs in milliseconds. This is the same
BERT encoder (all-MiniLM-L6-v2: 6 layers, mean pooling, L2 normalisation) read from the same
safetensors file and tokenized by the same `tokenizers` tokenizer, so its vectors match the
sentence-transformers ones to float32 rounding (tests/unit/test_embedder_query.py). Bulk encoding
(imports, refines) stays on sentence-transformers, which batches, threads and autocasts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


SMALL = 1 << 16  # activations up to this many (a query of ~40 tokens) take erf one by one


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, the same values either way: element by element for a query's few activations, since importing
    scipy.special costs a cold search 0.3-0.5 s; scipy's vectorised erf for more."""
    if x.size <= SMALL:
        return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(x.dtype)
    from scipy.special import erf

    return erf(x)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, as transformers computes it."""
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


class NumpyMiniLM:
    """A BERT sentence encoder (mean pooling, normalised) from a sentence-transformers folder."""

    def __init__(self, folder: Path, max_tokens: int) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_tokens = max_tokens
        self.weights = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"], self.eps)

    def _encode_one(self, ids: list[int]) -> np.ndarray:
        w = self.weights
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        head_dim = x.shape[1] // self.heads
        for i in range(self.layers):
            prefix = f"encoder.layer.{i}"
            q, k, v = (self._linear(x, f"{prefix}.attention.self.{p}").reshape(n, self.heads, head_dim).transpose(1, 0, 2)
                       for p in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(head_dim))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            attended = self._linear(context.transpose(1, 0, 2).reshape(n, -1), f"{prefix}.attention.output.dense")
            x = self._norm(attended + x, f"{prefix}.attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, f"{prefix}.intermediate.dense"))
            x = self._norm(self._linear(hidden, f"{prefix}.output.dense") + x, f"{prefix}.output.LayerNorm")
        pooled = x.mean(0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def encode(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, each truncated to `max_tokens` tokens."""
        from threadpoolctl import threadpool_limits

        self.tokenizer.enable_truncation(max_tokens or self.max_tokens)
        encodings = self.tokenizer.encode_batch([text.strip() for text in texts])
        # matrices of a few rows: BLAS threads only wait for each other (5-30x slower on a busy 2-core machine)
        with threadpool_limits(limits=1, user_api="blas"):
            return np.stack([self._encode_one(e.ids) for e in encodings]).astype(np.float32)
