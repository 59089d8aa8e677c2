"""One engine as a sampler replica: it generates, and it says which adapters it holds and how often a request
found its adapters already loaded (what an adapter-affinity router routes on, and what its tests check).

No Ray here: `generation/ray_serving.py` wraps a Sampler in a Ray Serve deployment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from loracle.generation.engine import GenerationRequest, GenerationResult
from loracle.generation.prompt_tags import parse_lora_tags


def request_adapters(request: GenerationRequest) -> list[str]:
    """Every adapter ref the request needs loaded: its mixes' and its prompt's `<lora:...>` tags."""
    refs = {ref: None for mix in request.image_mixes() for ref in mix.as_dict()}
    refs.update(dict.fromkeys(parse_lora_tags(request.prompt)[1]))
    return list(refs)


@dataclass(frozen=True)
class EngineInfo:
    """What callers of a remote engine read from the local one (the `ImageEngine` properties)."""

    native_size: int
    guides: tuple[str, ...]


@dataclass(frozen=True)
class SamplerStats:
    name: str
    requests: int  # requests it took (finished, running or failed)
    adapter_hits: int  # adapters a request needed that this replica already held
    adapter_loads: int  # adapters it had to load
    held: tuple[str, ...]  # adapter refs it holds, least recently used first


class Sampler:
    """An engine plus an LRU mirror of the adapters it holds (same capacity and order as its adapter cache)."""

    def __init__(self, engine, name: str = "local") -> None:
        self.engine = engine
        self.name = name
        self.capacity = engine.adapters.max_loaded
        self._held: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._requests = self._hits = self._loads = 0

    def info(self) -> EngineInfo:
        return EngineInfo(int(self.engine.native_size), tuple(sorted(self.engine.guide_names)))

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Counted and mirrored when the request arrives, as its adapters are loaded first: a router reading the
        mirror meanwhile already sees them here."""
        refs = request_adapters(request)
        with self._lock:
            hits = sum(ref in self._held for ref in refs)
            self._requests += 1
            self._hits += hits
            self._loads += len(refs) - hits
            for ref in refs:
                self._held[ref] = None
                self._held.move_to_end(ref)
            while len(self._held) > self.capacity:
                self._held.popitem(last=False)
        return self.engine.generate(request)

    def stats(self) -> SamplerStats:
        with self._lock:
            return SamplerStats(self.name, self._requests, self._hits, self._loads, tuple(self._held))
