"""Training the world's judge (the network and loading live in `loracle.generation.world.judge`): one small CNN that names the digit, detects each style, and gives features for FD.

Trained on real training digits, each drawn plain or with one, two or three compatible styles, as many images of
each count (so the digit is still named under any style, and styles are detected in the mixes the agent composes:
prompts may ask for three). A fifth of the training digits is kept apart as a validation split: the per-style
thresholds are calibrated on it and training settings are chosen on it, never on the held-out digits. Scored on
held-out real digits, also per number of styles. Saved as safetensors + JSON (no pickle).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from loracle.evals.world.data import Split
from loracle.evals.world.styles import (
    HIDDEN_BY,
    STYLE_NAMES,
    STYLES,
    SYMMETRIC_DIGITS,
    apply_styles,
    compatible,
    compatible_sets,
)
from loracle.generation.world.judge import (  # noqa: F401  (re-exported for training code)
    FEATURE_DIM,
    Judge,
    JudgeConfig,
    JudgeNet,
    judge_meta,
    load_judge,
    to_tensor,
)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to two feature sets (the FID formula on the judge's features)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@dataclass(frozen=True)
class JudgeTraining:
    """How the judge is trained. `style_counts`: how often a training image gets 0, 1, 2, 3 styles."""

    net: JudgeConfig = field(default_factory=JudgeConfig)
    batch: int = 64
    lr: float = 2e-3
    warmup: int = 200
    style_counts: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    noise: float = 0.05  # the largest pixel-noise amplitude (drawn uniformly per image up to it)
    validation: float = 0.2


def random_style_set(rng: random.Random, styles: tuple[str, ...], k: int) -> tuple[str, ...]:
    """`k` distinct compatible styles, drawn uniformly."""
    while True:
        combo = tuple(rng.sample(styles, k))
        if compatible(combo):
            return combo


def styled_batch(data: Split, idx: torch.Tensor, rng: random.Random, styles: tuple[str, ...], k: int):
    """Images of `idx`, each with a random compatible set of `k` styles, and the multi-hot style targets."""
    sets = [random_style_set(rng, styles, k) for _ in range(len(idx))]
    x = torch.empty(len(idx), *data.images.shape[1:])
    targets = torch.zeros(len(idx), len(styles))
    for combo in set(sets):
        rows = [i for i, s in enumerate(sets) if s == combo]
        x[rows] = apply_styles(data.images[idx[rows]], combo)
        targets[rows] = style_targets(combo, styles)
    return x, targets


def style_targets(combo: tuple[str, ...], styles: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([float(s in combo) for s in styles])


def unseen_styles(labels: torch.Tensor, targets: torch.Tensor, styles: tuple[str, ...]) -> torch.Tensor:
    """(N, n_styles) booleans: styles a render cannot show, so a read is right with or without them. "mirrored"
    on a 0, 1 or 8; "boxed" on an inverted render (the frame is ink drawn on an inked border: pixel-identical)."""
    out = torch.zeros_like(targets, dtype=torch.bool)
    out[:, styles.index("mirrored")] = torch.isin(labels, torch.tensor(SYMMETRIC_DIGITS))
    for hidden, by in HIDDEN_BY.items():
        out[:, styles.index(hidden)] = targets[:, styles.index(by)] > 0
    return out


class StyledPool:
    """Every digit of a split rendered with every compatible style set (0-3 styles), so batches are drawn by
    indexing instead of re-rendering: at 16x16 px the whole pool is ~80 MB for the training split."""

    def __init__(self, data: Split, styles: tuple[str, ...]) -> None:
        self.styles, self.labels = styles, data.labels
        self.combos = {k: compatible_sets(styles, k) for k in range(4)}
        flat = [c for k in range(4) for c in self.combos[k]]
        self.first = {k: sum(len(self.combos[j]) for j in range(k)) for k in range(4)}
        self.images = torch.stack([apply_styles(data.images, c) for c in flat])  # (combos, N, 1, H, W)
        self.targets = torch.stack([style_targets(c, styles) for c in flat])

    def sample(self, n: int, counts: tuple[float, ...], gen: torch.Generator):
        """`n` random (digit, style set) renders: the number of styles drawn by `counts`, then a set uniformly."""
        k = torch.multinomial(torch.tensor(counts), n, replacement=True, generator=gen)
        sizes = torch.tensor([len(self.combos[j]) for j in range(4)])
        starts = torch.tensor([self.first[j] for j in range(4)])
        combo = starts[k] + (torch.rand(n, generator=gen) * sizes[k]).long()
        digit = torch.randint(0, len(self.labels), (n,), generator=gen)
        return self.images[combo, digit], self.labels[digit], self.targets[combo]

    def with_count(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every digit with every compatible set of exactly `k` styles: images, digit labels, style targets."""
        c = range(self.first[k], self.first[k] + len(self.combos[k]))
        n = len(self.labels)
        return (self.images[list(c)].flatten(0, 1), self.labels.repeat(len(c)),
                self.targets[list(c)].repeat_interleave(n, 0))


def _augment(x: torch.Tensor, gen: torch.Generator, noise: float) -> torch.Tensor:
    """Whole-pixel shifts and pixel noise, so generated digits (never pixel-perfect) are judged like real ones.
    Shifts are whole pixels: interpolated sub-pixel shifts blur every image and hide the "blurred" style."""
    n = x.shape[0]
    shifts = torch.randint(-1, 2, (n, 2), generator=gen)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(x)
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
        out[rows] = padded[rows, :, 1 + dy:17 + dy, 1 + dx:17 + dx]
    amplitude = noise * torch.rand(n, 1, 1, 1, generator=gen)
    return (out + amplitude * torch.randn(out.shape, generator=gen)).clamp(-1, 1)


def split_validation(train: Split, share: float, seed: int = 0) -> tuple[Split, Split]:
    """A stratified `share` of the training digits kept apart for calibration and for choosing settings."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(train.labels))
    fit, val = train_test_split(idx, test_size=share, random_state=seed, stratify=train.labels.numpy())
    fit, val = torch.from_numpy(np.sort(fit)), torch.from_numpy(np.sort(val))
    return Split(train.images[fit], train.labels[fit]), Split(train.images[val], train.labels[val])


def calibrate_thresholds(judge: Judge, pool: StyledPool) -> dict[str, float]:
    """Per style, the threshold that reads it right most often on validation renders with 0-3 styles (ties go
    to the one nearest 0.5), counting a style the render cannot show as right either way."""
    x, labels, y = (torch.cat(parts) for parts in zip(*(pool.with_count(k) for k in range(4))))
    p, free = judge.style_probs(x), unseen_styles(labels, y, judge.styles)
    grid = torch.linspace(0.05, 0.95, 91)
    out = {}
    for i, s in enumerate(judge.styles):
        right = ((p[:, i, None] > grid) == (y[:, i, None] > 0)) | free[:, i, None]
        score = right.float().mean(0) - 1e-6 * (grid - 0.5).abs()
        out[s] = round(float(grid[score.argmax()]), 2)
    return out


def train_judge(train: Split, held_out: Split, steps: int, seed: int = 0, log=print,
                config: JudgeTraining | None = None) -> tuple[Judge, dict]:
    """Returns the judge and a report with validation and held-out accuracies (plain digits, styled digits,
    each style, each number of styles)."""
    t0 = time.perf_counter()
    config = config or JudgeTraining()
    torch.manual_seed(seed)
    styles = STYLE_NAMES
    fit, val = split_validation(train, config.validation)
    pool, val_pool = StyledPool(fit, styles), StyledPool(val, styles)
    net = JudgeNet(len(styles), config.net)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    pos_weight = torch.full((len(styles),), 2.0)
    losses, warmup = [], max(1, min(config.warmup, steps // 10))
    for step in range(steps):
        warm = min(1.0, (step + 1) / warmup)
        for g in opt.param_groups:  # warmup, then cosine decay to 5% of the peak
            g["lr"] = config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        x, y_digit, y_style = pool.sample(config.batch, config.style_counts, gen)
        y_style = y_style * ~unseen_styles(y_digit, y_style, styles)  # trained to read what the render shows
        d_logits, s_logits = net(_augment(x, gen, config.noise))
        loss = F.cross_entropy(d_logits, y_digit) + F.binary_cross_entropy_with_logits(
            s_logits, y_style, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log and steps >= 10 and (step + 1) % max(1, steps // 10) == 0:
            log(f"  judge: step {step + 1}/{steps}, loss {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    judge = Judge(net, styles)
    judge.thresholds = calibrate_thresholds(judge, val_pool)
    report = evaluate_judge(judge, held_out)
    k = max(1, min(20, steps // 5))
    report.update(validation=validation_report(judge, val_pool), steps=steps,
                  seconds=round(time.perf_counter() - t0, 1),
                  train_loss_first=round(sum(losses[:k]) / k, 4), train_loss_last=round(sum(losses[-k:]) / k, 4))
    if log:
        read = report["by_style_count"]
        log(f"  judge: held-out real accuracy {report['digit_accuracy_real']:.4f}, read exactly with 1/2/3 styles "
            f"{read['1']['both']:.4f}/{read['2']['both']:.4f}/{read['3']['both']:.4f} ({report['seconds']:.0f}s)")
    return judge, report


def _reads(judge: Judge, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    digit = judge.digits(x) == labels
    agree = judge.present(x) == (targets > 0)
    free = unseen_styles(labels, targets, judge.styles)
    exact = (agree | free).all(1)
    free[:, judge.styles.index("boxed")] = False
    strict = (agree | free).all(1)
    return {"digit": round(digit.float().mean().item(), 4), "styles_exact": round(exact.float().mean().item(), 4),
            "both": round((digit & exact).float().mean().item(), 4),
            "both_counting_boxed_on_inverted": round((digit & strict).float().mean().item(), 4)}


def validation_report(judge: Judge, pool: StyledPool) -> dict:
    """Every validation digit with every compatible set of 1, 2, 3 styles, and plain digits."""
    plain, labels, _ = pool.with_count(0)
    out = {"digit_accuracy_real": round((judge.digits(plain) == labels).float().mean().item(), 4),
           "plain_images_with_a_false_style": round(judge.present(plain).any(1).float().mean().item(), 4)}
    for k in (1, 2, 3):
        out[str(k)] = _reads(judge, *pool.with_count(k))
    return out


def evaluate_judge(judge: Judge, held_out: Split, seed: int = 1) -> dict:
    """Held-out accuracy on plain digits, on styled digits, and per style (present vs absent)."""
    real = (judge.digits(held_out.images) == held_out.labels).float().mean().item()
    idx = torch.arange(len(held_out.labels))
    rng, count = random.Random(seed), idx % 4  # a quarter each plain and with 1, 2, 3 styles
    x, y = torch.empty_like(held_out.images), torch.zeros(len(idx), len(judge.styles))
    for k in range(4):
        rows = (count == k).nonzero().flatten()
        x[rows], y[rows] = styled_batch(held_out, rows, rng, judge.styles, k)
    styled = (judge.digits(x) == held_out.labels).float().mean().item()
    pred = judge.present(x).float()
    per_style = {}
    for i, s in enumerate(judge.styles):
        single = apply_styles(held_out.images, [s])
        tpr = judge.present(single)[:, i].float().mean().item()
        per_style[s] = {"accuracy_mixed": round((pred[:, i] == y[:, i]).float().mean().item(), 4),
                        "detected_when_applied": round(tpr, 4)}
    fpr = judge.present(held_out.images).any(1).float().mean().item()
    return {
        "by_style_count": by_style_count(judge, held_out, seed),
        "digit_accuracy_real": round(real, 4), "digit_accuracy_styled": round(styled, 4),
        "style_accuracy_mean": round(float(np.mean([v["accuracy_mixed"] for v in per_style.values()])), 4),
        "plain_images_with_a_false_style": round(fpr, 4), "per_style": per_style, "n_held_out": len(idx),
    }


def by_style_count(judge: Judge, held_out: Split, seed: int = 1) -> dict[str, dict[str, float]]:
    """Held-out renders with exactly 1, 2 and 3 compatible styles: the right digit, exactly the styles applied
    (no more, no fewer; a style the render cannot show counts either way, see `unseen_styles`), and both (what the
    faithfulness suite asks of each image). `both_counting_boxed_on_inverted` also counts an invisible frame."""
    idx = torch.arange(len(held_out.labels))
    out = {}
    for k in (1, 2, 3):
        x, y = styled_batch(held_out, idx, random.Random(seed + k), judge.styles, k=k)
        out[str(k)] = _reads(judge, x, held_out.labels, y)
    return out


def save_judge(judge: Judge, folder: Path, report: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.net.state_dict().items()}, str(folder / "judge.safetensors"))
    meta = {**judge_meta(judge), "triggers": {st.name: st.trigger for st in STYLES if st.name in judge.styles},
            "feature_dim": judge.net.config.feature_dim, "input": "1x16x16 in [-1, 1] (ink +1)", "report": report or {}}
    (folder / "judge.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder
