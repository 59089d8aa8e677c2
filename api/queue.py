"""A bounded run queue in front of a worker pool: runs execute off the event loop, and a full queue or a
busy tenant is answered at once (429 with Retry-After) instead of piling up."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class QueueFull(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RunQueue:
    """`workers` runs at a time, `queue_size` waiting, `per_tenant` queued-or-running per tenant."""

    def __init__(self, workers: int, queue_size: int, per_tenant: int) -> None:
        self.workers, self.queue_size, self.per_tenant = workers, queue_size, per_tenant
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loracle-run")
        self._lock = threading.Lock()
        self._tenants: Counter[str] = Counter()
        self._in_flight = 0
        self._running = 0
        self._durations: deque[float] = deque([5.0], maxlen=32)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def running(self) -> int:
        return self._running

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean run time times the queue ahead, per worker."""
        mean = sum(self._durations) / len(self._durations)
        waiting = max(self._in_flight - self.workers + 1, 1)
        return max(1, math.ceil(mean * waiting / self.workers))

    def reserve(self, tenant: str) -> None:
        """Take a place for one of this tenant's runs, or raise QueueFull; `run` or `release` it after."""
        with self._lock:
            if self._tenants[tenant] >= self.per_tenant:
                raise QueueFull(f"this tenant already has {self.per_tenant} runs queued or running; "
                                "wait for one to finish", self.retry_after())
            if self._in_flight >= self.workers + self.queue_size:
                raise QueueFull(f"the server is busy ({self._in_flight} runs queued or running); try again later",
                                self.retry_after())
            self._tenants[tenant] += 1
            self._in_flight += 1

    def release(self, tenant: str) -> None:
        """Give back a place `reserve` took (the run never went to a worker, or it finished)."""
        with self._lock:
            self._tenants[tenant] -= 1
            if self._tenants[tenant] <= 0:
                del self._tenants[tenant]
            self._in_flight -= 1

    def run(self, tenant: str, fn: Callable[[], Any]) -> asyncio.Future:
        """Schedule `fn` on a worker in the place `reserve` took for this tenant (given back when it ends)."""

        def work() -> Any:
            with self._lock:
                self._running += 1
            started = time.perf_counter()
            try:
                return fn()
            finally:
                with self._lock:
                    self._running -= 1
                    self._durations.append(time.perf_counter() - started)
                self.release(tenant)

        try:
            return asyncio.get_running_loop().run_in_executor(self.executor, work)
        except BaseException:
            self.release(tenant)
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
