"""One BLAS thread for the small matrix products of a search.

A search multiplies a query by a few thousand stored vectors (the neighbours list, the pick prior,
the query map): tiny products that OpenBLAS still splits over its threads. On a busy 2-core machine
the threads wait on each other: 1,507 x 384 by one vector took 4-45 ms with two threads and 0.2 ms
with one (measured under load 9-22), so the rerank's prior and the first stage's neighbours list cost
more than their database reads. Same reasoning as torch.set_num_threads(1) and LightGBM's n_jobs=1.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # finds the loaded BLAS libraries once


def one_blas_thread() -> AbstractContextManager:
    """BLAS limited to one thread from now until the returned context exits (or for good, if never entered)."""
    return _controller().limit(limits=1, user_api="blas")
