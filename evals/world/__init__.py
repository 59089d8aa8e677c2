"""The digits world: a miniature, fully trained stand-in for Stable Diffusion + Civitai, offline.

`world_paths()` gives the committed artifacts: `base/` and `guide/` (diffusers folders for
`generation.base_models.load_base_model`), `loras/` (adapter folder), `catalog.jsonl` (shared catalog format),
`conflicts.json`, `judge/` (`evals.world.judge.load_judge`). `loracle world train` rebuilds them.
"""

from loracle.generation.world.paths import WorldPaths, world_paths

__all__ = ["WorldPaths", "world_paths"]
