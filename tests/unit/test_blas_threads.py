"""Searches run their small matrix products on one BLAS thread and give the threads back after."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from loracle.tools.blas_threads import one_blas_thread


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_one_blas_thread_inside_the_context_and_the_old_count_after() -> None:
    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    before = _blas_threads()
    with one_blas_thread():
        assert _blas_threads() and set(_blas_threads()) == {1}
    assert _blas_threads() == before
