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


SMALL = 1 << 14  # activations up to this many (a query of ~10 tokens) take erf one by one


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
        # each linear layer's weight kept transposed: x @ W then reads it in order (~1.5x faster than W.T)
        self.linears = {name.removesuffix(".weight"): np.ascontiguousarray(self.weights.pop(name).T)
                        for name in [n for n, w in self.weights.items() if w.ndim == 2 and not n.startswith("embeddings.")]}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.linears[name] + self.weights[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"], self.eps)

    def _attention(self, x: np.ndarray, prefix: str, bounds: list[tuple[int, int]]) -> np.ndarray:
        """Self-attention of each text over its own tokens (the rows of `x` between its bounds)."""
        heads, head_dim = self.heads, x.shape[1] // self.heads
        q, k, v = (self._linear(x, f"{prefix}.attention.self.{p}") for p in ("query", "key", "value"))
        context = np.empty_like(q)
        for start, end in bounds:
            qh, kh, vh = (m[start:end].reshape(end - start, heads, head_dim).transpose(1, 0, 2) for m in (q, k, v))
            scores = qh @ kh.transpose(0, 2, 1) / np.float32(np.sqrt(head_dim))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context[start:end] = ((scores / scores.sum(-1, keepdims=True)) @ vh).transpose(1, 0, 2).reshape(end - start, -1)
        return self._linear(context, f"{prefix}.attention.output.dense")

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        """One vector per text. The texts' tokens are stacked, so each layer's weights are read once for all
        of them; only attention looks at one text at a time."""
        w = self.weights
        lengths = [len(i) for i in ids]
        ends = np.cumsum(lengths).tolist()
        bounds = list(zip([0, *ends[:-1]], ends))
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = w["embeddings.word_embeddings.weight"][np.concatenate(ids)] + w["embeddings.position_embeddings.weight"][positions]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        for i in range(self.layers):
            prefix = f"encoder.layer.{i}"
            x = self._norm(self._attention(x, prefix, bounds) + x, f"{prefix}.attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, f"{prefix}.intermediate.dense"))
            x = self._norm(self._linear(hidden, f"{prefix}.output.dense") + x, f"{prefix}.output.LayerNorm")
        pooled = np.stack([x[start:end].mean(0) for start, end in bounds])
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, each truncated to `max_tokens` tokens."""
        from threadpoolctl import threadpool_limits

        self.tokenizer.enable_truncation(max_tokens or self.max_tokens)
        encodings = self.tokenizer.encode_batch([text.strip() for text in texts])
        # matrices of a few rows: BLAS threads only wait for each other (5-30x slower on a busy 2-core machine)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._forward([e.ids for e in encodings]).astype(np.float32)
