"""A query's few texts go through the numpy copy of MiniLM: the same vectors as sentence-transformers, without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from loracle.tools.embedder import BATCH, encode_texts

TEXTS = [
    "bold seven",
    "a watercolor painting of a fox in a misty forest",
    "  Neon CYBERPUNK streets, at night!!  ",
    "café, naïve, 漢字 and a 🦊",
    "x",
    " ".join(["a very long description of brush strokes"] * 60),  # past 256 tokens: truncated alike
]


def test_small_batches_match_sentence_transformers(embedder) -> None:
    for limit in (None, 16):
        fast = embedder.encode(TEXTS, max_tokens=limit)
        reference = encode_texts(embedder._model(), TEXTS, limit or embedder.max_tokens)
        assert fast.dtype == np.float32 and fast.shape == (len(TEXTS), embedder.dims)
        np.testing.assert_allclose(fast, reference, atol=2e-6)
    truncated, full = embedder.encode(TEXTS[-1:], max_tokens=16), embedder.encode(TEXTS[-1:])
    assert float(truncated[0] @ full[0]) < 0.999  # the limit really truncates


def test_a_query_never_imports_torch() -> None:
    code = ("import sys; from loracle.tools.embedder import get_embedder; e = get_embedder(); "
            "assert e.encode(['bold seven']).shape == (1, 384); "
            "assert 'torch' not in sys.modules and 'scipy.special' not in sys.modules, 'a short query loaded them'; "
            f"assert e.encode(['a watercolor painting of a fox'] * {BATCH - 1}).shape == ({BATCH - 1}, 384); "
            "assert 'torch' not in sys.modules, 'a small batch loaded torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no library progress bars or warnings
