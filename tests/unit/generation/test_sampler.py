"""The sampler replica's own bookkeeping: what it holds (as its adapter cache does) and its hits and loads."""

from __future__ import annotations

from loracle.generation.base_models import build_tiny_model
from loracle.generation.engine import Engine, GenerationRequest
from loracle.generation.sampler import Sampler, request_adapters


def request(prompt: str, *mixes: dict[str, float]) -> GenerationRequest:
    return GenerationRequest(prompt, mixes=list(mixes) or None, steps=2, scheduler="ddim", skipping=None)


def test_request_adapters_are_the_mixes_and_the_prompt_tags() -> None:
    assert request_adapters(request("a fox <lora:style3:0.5>", {"style0": 0.8}, {"style1": 0.4, "style0": 0.2})) == \
        ["style0", "style1", "style3"]


def test_the_sampler_mirrors_its_adapter_lru_and_counts_hits_and_loads(lora_dir) -> None:
    engine = Engine(build_tiny_model(), [lora_dir], max_loaded=2)
    sampler = Sampler(engine, name="r0")
    for mix in ({"style0": 0.8}, {"style1": 0.8}, {"style0": 0.5}, {"style2": 0.8}):
        sampler.generate(request("a fox", mix))
    stats = sampler.stats()
    assert (stats.requests, stats.adapter_hits, stats.adapter_loads) == (4, 1, 3)
    assert stats.held == ("style0", "style2")  # style1 was least recently used, as in the engine's cache
    assert len(engine.adapters.loaded) == 2 and engine.adapters.loads == 3
    assert sampler.info().native_size == engine.native_size
