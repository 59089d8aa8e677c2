"""The digits world's judge at run time: one small CNN that names the digit and detects each style.

Inspection uses it as its prompt-fit check in this world, and the eval harness as its metric; training it
lives in `loracle.evals.world.judge`. Stored as safetensors + JSON (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

FEATURE_DIM = 128
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class JudgeNet(nn.Module):
    def __init__(self, n_styles: int):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.digit = nn.Linear(FEATURE_DIM, 10)
        self.style = nn.Linear(FEATURE_DIM, n_styles)
        self.drop = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.drop(self.features(x))
        return self.digit(f), self.style(f)


def to_tensor(images) -> torch.Tensor:
    """PIL images (L or RGB) or a tensor in [-1, 1] -> (N, 1, 16, 16) tensor in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arr = np.stack([np.asarray(im.convert("L"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).unsqueeze(1) / 127.5 - 1


@dataclass
class Judge:
    """`styles`: the judge's style names in output order; `triggers`: style name -> its adapter's trigger word."""

    net: JudgeNet
    styles: tuple[str, ...]
    threshold: float = 0.5
    triggers: dict[str, str] = field(default_factory=dict)

    @torch.no_grad()
    def _run(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        self.net.eval()
        return self.net(to_tensor(images))

    def digits(self, images) -> torch.Tensor:
        """Predicted digit per image."""
        return self._run(images)[0].argmax(1)

    def style_probs(self, images) -> torch.Tensor:
        """(N, n_styles) probability that each style is present."""
        return torch.sigmoid(self._run(images)[1])

    def detect(self, images) -> list[set[str]]:
        """The set of styles detected in each image."""
        p = self.style_probs(images) > self.threshold
        return [{s for s, on in zip(self.styles, row) if on} for row in p.tolist()]

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        self.net.eval()
        return self.net.features(to_tensor(images)).double().numpy()


def load_judge(folder: str | Path) -> Judge:
    folder = Path(folder)
    meta = json.loads((folder / "judge.json").read_text())
    net = JudgeNet(len(meta["styles"]))
    net.load_state_dict(load_file(str(folder / "judge.safetensors")))
    net.eval()
    return Judge(net, tuple(meta["styles"]), float(meta["threshold"]), dict(meta.get("triggers", {})))
