"""The digits world's run-time part: a miniature, fully trained stand-in for Stable Diffusion + Civitai, offline.

`world_paths()` gives the bundled artifacts (package data): `base/` and `guide/` (diffusers folders for
`generation.base_models.load_base_model`), `loras/` (adapter folder), `catalog.jsonl` (shared catalog format),
`conflicts.json`, `judge/` (`generation.world.judge.load_judge`), and the MAR with its adapters.
Training and benchmarks live in `loracle.evals.world`; `loracle world train` rebuilds the artifacts.
"""

from loracle.generation.world.paths import WorldPaths, world_paths

__all__ = ["WorldPaths", "world_paths"]
