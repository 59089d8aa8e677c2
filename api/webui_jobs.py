"""The A1111 routes' runs in flight, per tenant: what `/sdapi/v1/progress` reports and `/sdapi/v1/interrupt`
stops. A tenant sees and stops only its own runs."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from loracle.api.service import RunHandle


@dataclass
class Job:
    """One txt2img or img2img request while it runs, followed through its run's events."""

    kind: str
    handle: RunHandle
    started: float = field(default_factory=time.time)
    step: int = 0
    steps: int = 0
    images: list[str] = field(default_factory=list)  # stored image paths, relative to the images folder
    text: str = "Waiting..."

    @property
    def interrupted(self) -> bool:
        return self.handle.cancel.is_set()

    @property
    def progress(self) -> float:
        return 0.01 + 0.98 * (self.step / self.steps) if self.steps else 0.01

    async def follow(self) -> None:
        """Read the run's events until it ends."""
        async for event in self.handle.stream(heartbeat_s=60):
            kind = (event or {}).get("event")
            if kind == "plan":
                self.text = "Planning: " + "; ".join(event["tasks"])
            elif kind == "picks":
                self.text = "Picked: " + (", ".join(n for ns in event["picks"].values() for n in ns) or "no adapters")
            elif kind == "progress":
                self.step, self.steps, self.text = event["step"], event["steps"], "Sampling"
            elif kind == "images":
                self.images = list(event["paths"])
            elif kind == "retry":
                self.step, self.text = 0, f"Retrying (attempt {event['attempt'] + 1})"


class WebuiJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, list[Job]] = {}
        self._lock = threading.Lock()

    def start(self, tenant: str, kind: str, handle: RunHandle) -> tuple[Job, asyncio.Task]:
        job = Job(kind, handle)
        with self._lock:
            self._jobs.setdefault(tenant, []).append(job)
        return job, asyncio.create_task(job.follow())

    def finish(self, tenant: str, job: Job) -> None:
        with self._lock:
            jobs = self._jobs.get(tenant, [])
            if job in jobs:
                jobs.remove(job)
            if not jobs:
                self._jobs.pop(tenant, None)

    def current(self, tenant: str) -> Job | None:
        """The tenant's oldest request still running."""
        with self._lock:
            jobs = self._jobs.get(tenant, [])
            return jobs[0] if jobs else None

    def interrupt(self, tenant: str) -> int:
        """Cancel every run of the tenant's A1111 requests; how many."""
        with self._lock:
            jobs = list(self._jobs.get(tenant, []))
        for job in jobs:
            job.handle.cancel.set()
        return len(jobs)
