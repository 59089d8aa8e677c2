"""Where the world's artifacts live: one place, so the demo, the agent and the benchmark agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class WorldPaths:
    """Folders and files of one built world (the committed one by default)."""

    root: Path

    @property
    def base(self) -> Path:  # diffusers folder for generation.base_models.load_base_model
        return self.root / "base"

    @property
    def guide(self) -> Path:  # the weaker model for autoguidance, same layout
        return self.root / "guide"

    @property
    def loras(self) -> Path:  # adapter folder (LoRA safetensors, diffusers and kohya layouts)
        return self.root / "loras"

    @property
    def catalog(self) -> Path:  # catalog JSONL in the shared catalog's format
        return self.root / "catalog.jsonl"

    @property
    def conflicts(self) -> Path:  # pairs of adapters that must not be mixed, with the reason
        return self.root / "conflicts.json"

    @property
    def judge(self) -> Path:  # judge.safetensors + judge.json (generation.world.judge.load_judge)
        return self.root / "judge"

    @property
    def eval_judge(self) -> Path:  # a second judge, trained apart, that only the evals read (same layout as judge)
        return self.root / "eval_judge"

    @property
    def mar(self) -> Path:  # MAR model folder for generation.mar.io.load_mar (pixel patches, text-conditioned)
        return self.root / "mar"

    @property
    def mar_loras(self) -> Path:  # peft LoRAs on the MAR (safetensors, "transformer." keys)
        return self.root / "mar_loras"

    @property
    def mar_catalog(self) -> Path:  # the MAR adapters' catalog JSONL (base_model "Digits MAR 1.0")
        return self.root / "catalog_mar.jsonl"

    @property
    def report(self) -> Path:  # training report: losses, held-out numbers, seconds
        return self.root / "train_report.json"


def world_paths(root: str | Path | None = None) -> WorldPaths:
    """Paths of the bundled world (or of one built elsewhere with `loracle world train --out DIR`)."""
    return WorldPaths(Path(root) if root is not None else ARTIFACTS)
