"""Bulk encoding through single-threaded worker processes gives the vectors the in-process path gives."""

from __future__ import annotations

import numpy as np
import pytest

import loracle.tools.embedder as embedder_module


def test_bulk_workers_match_in_process_vectors(embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "BULK_MIN_TEXTS", 1)
    monkeypatch.setattr(embedder_module, "SLICE", 4)
    monkeypatch.setenv("LORACLE_EMBED_WORKERS", "2")
    texts = [f"{word} painting of a fox, number {i}" for i, word in enumerate(["oil", "ink", "pastel watercolor"] * 6)]
    expected = embedder.encode(texts, max_tokens=32)
    with embedder.bulk(len(texts)):
        assert embedder._pool is not None
        got = embedder.encode(texts, max_tokens=32)
    assert embedder._pool is None
    assert got.shape == (len(texts), embedder.dims)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # same order, same vectors


def test_bulk_is_skipped_for_small_jobs_and_one_worker(embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    with embedder.bulk(10):
        assert embedder._pool is None
    monkeypatch.setenv("LORACLE_EMBED_WORKERS", "1")
    with embedder.bulk(10**6):
        assert embedder._pool is None
    monkeypatch.setenv("LORACLE_EMBED_WORKERS", "two")
    with pytest.raises(ValueError, match="LORACLE_EMBED_WORKERS"):
        embedder_module.bulk_workers()


def test_bfloat16_vectors_stay_within_rounding_of_float32(embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"{style} portrait of a knight in armour, {i} candles" for i, style in enumerate(["oil", "ink"] * 20)]
    monkeypatch.setenv("LORACLE_EMBED_PRECISION", "float32")
    exact = embedder.encode(texts, max_tokens=32)
    monkeypatch.setenv("LORACLE_EMBED_PRECISION", "bfloat16")
    rounded = embedder.encode(texts, max_tokens=32)
    cosines = np.sum(exact * rounded, axis=1)
    assert not np.array_equal(exact, rounded)  # bfloat16 really ran
    assert cosines.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(rounded, axis=1), 1.0, atol=1e-5)


def test_precision_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORACLE_EMBED_PRECISION", "auto")
    assert not embedder_module.use_bfloat16(1)  # a query's few texts: float32 is faster
    assert embedder_module.use_bfloat16(embedder_module.BATCH) == embedder_module._cpu_has_bf16()
    monkeypatch.setenv("LORACLE_EMBED_PRECISION", "float32")
    assert not embedder_module.use_bfloat16(10**4)
    monkeypatch.setenv("LORACLE_EMBED_PRECISION", "half")
    with pytest.raises(ValueError, match="LORACLE_EMBED_PRECISION"):
        embedder_module.use_bfloat16(10)
