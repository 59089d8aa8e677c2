"""The digits world's judge at run time: one small CNN that names the digit and detects each style.

Inspection uses it as its prompt-fit check in this world, and the eval harness as its metric; training it
lives in `loracle.evals.world.judge`. Stored as safetensors + JSON (no pickle); the JSON carries the network's
shape and the per-style thresholds, so judges saved before either existed still load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

FEATURE_DIM = 128
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class JudgeConfig:
    """The network's shape; the defaults are the first judge's (a JSON without "net" loads as that)."""

    widths: tuple[int, int, int] = (16, 32, 64)
    feature_dim: int = FEATURE_DIM
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if len(self.widths) != 3 or min(self.widths) < 1 or self.feature_dim < 1:
            raise ValueError(f"judge config needs three positive conv widths and a positive feature_dim, got {self}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))


class JudgeNet(nn.Module):
    def __init__(self, n_styles: int, config: JudgeConfig | None = None):
        super().__init__()
        self.config = config = config or JudgeConfig()
        w1, w2, w3 = config.widths
        self.c1 = nn.Conv2d(1, w1, 3, padding=1)
        self.c2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.c3 = nn.Conv2d(w2, w3, 3, padding=1)
        self.fc = nn.Linear(w3 * 4 * 4, config.feature_dim)
        self.digit = nn.Linear(config.feature_dim, 10)
        self.style = nn.Linear(config.feature_dim, n_styles)
        self.drop = nn.Dropout(config.dropout)

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
    """`styles`: the judge's style names in output order; `thresholds`: style name -> the probability above which
    it counts as present (calibrated per style; a style not listed uses `threshold`); `triggers`: style name -> its
    adapter's trigger word."""

    net: JudgeNet
    styles: tuple[str, ...]
    threshold: float = 0.5
    triggers: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def _run(self, images, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """In chunks: one pass over tens of thousands of renders would hold GBs of activations."""
        self.net.eval()
        outs = [self.net(x) for x in to_tensor(images).split(chunk)]
        return torch.cat([d for d, _ in outs]), torch.cat([s for _, s in outs])

    def digits(self, images) -> torch.Tensor:
        """Predicted digit per image."""
        return self._run(images)[0].argmax(1)

    def reads(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass, how sure each read is: (N, 10) digit probabilities and (N, n_styles) each style's logit minus
        its threshold's (> 0 is seen; the distance says how surely)."""
        digit_logits, style_logits = self._run(images)
        return digit_logits.softmax(1), style_logits - torch.logit(self.style_thresholds())

    def style_probs(self, images) -> torch.Tensor:
        """(N, n_styles) probability that each style is present."""
        return torch.sigmoid(self._run(images)[1])

    def style_thresholds(self) -> torch.Tensor:
        return torch.tensor([self.thresholds.get(s, self.threshold) for s in self.styles])

    def present(self, images) -> torch.Tensor:
        """(N, n_styles) booleans: each style seen or not, at its own threshold."""
        return self.style_probs(images) > self.style_thresholds()

    def detect(self, images) -> list[set[str]]:
        """The set of styles detected in each image."""
        return [{s for s, on in zip(self.styles, row) if on} for row in self.present(images).tolist()]

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        self.net.eval()
        return self.net.features(to_tensor(images)).double().numpy()


def judge_meta(judge: Judge) -> dict:
    """What `load_judge` needs besides the weights."""
    return {"styles": list(judge.styles), "threshold": judge.threshold, "thresholds": dict(judge.thresholds),
            "net": asdict(judge.net.config), "triggers": dict(judge.triggers)}


def load_judge(folder: str | Path) -> Judge:
    folder = Path(folder)
    meta = json.loads((folder / "judge.json").read_text())
    net = JudgeNet(len(meta["styles"]), JudgeConfig(**meta.get("net", {})))
    net.load_state_dict(load_file(str(folder / "judge.safetensors")))
    net.eval()
    return Judge(net, tuple(meta["styles"]), float(meta["threshold"]), dict(meta.get("triggers", {})),
                 {s: float(t) for s, t in meta.get("thresholds", {}).items()})
