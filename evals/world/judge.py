"""Training the world's judge (the network and loading live in `loracle.generation.world.judge`): one small CNN that names the digit, detects each style, and gives features for FD.

Trained on real training digits, each drawn plain or with one, two or three compatible styles (so the digit is
still named under any style, and styles are detected in the mixes the agent composes: prompts may ask for
three). Scored on held-out real digits, also per number of styles. Saved as safetensors + JSON (no pickle).
The agent's inspection can use it as its "prompt fit" check in this world.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from loracle.evals.world.data import Split
from loracle.evals.world.styles import STYLE_NAMES, STYLES, apply_styles, compatible
from loracle.generation.world.judge import FEATURE_DIM, Judge, JudgeNet, load_judge, to_tensor  # noqa: F401  (re-exported for training code)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to two feature sets (the FID formula on the judge's features)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


STYLE_COUNTS = ((0, 0.2), (1, 0.3), (2, 0.3), (3, 0.2))  # how many styles a training image gets, and how often


def random_style_set(rng: random.Random, styles: tuple[str, ...], k: int) -> tuple[str, ...]:
    """`k` distinct compatible styles, drawn uniformly."""
    while True:
        combo = tuple(rng.sample(styles, k))
        if compatible(combo):
            return combo


def _random_styles(rng: random.Random, styles: tuple[str, ...]) -> tuple[str, ...]:
    r = rng.random()
    for k, share in STYLE_COUNTS:
        if r < share:
            return random_style_set(rng, styles, k)
        r -= share
    return random_style_set(rng, styles, STYLE_COUNTS[-1][0])


def styled_batch(data: Split, idx: torch.Tensor, rng: random.Random, styles: tuple[str, ...], k: int | None = None):
    """Images of `idx`, each with a random compatible style set (of `k` styles, else of a random size), and the
    multi-hot style targets."""
    xs, targets = [], torch.zeros(len(idx), len(styles))
    sets = [_random_styles(rng, styles) if k is None else random_style_set(rng, styles, k) for _ in range(len(idx))]
    for combo in set(sets):
        rows = [i for i, s in enumerate(sets) if s == combo]
        xs.append((rows, apply_styles(data.images[idx[rows]], combo)))
        for i in rows:
            for s in combo:
                targets[i, styles.index(s)] = 1
    x = torch.empty(len(idx), *data.images.shape[1:])
    for rows, imgs in xs:
        x[rows] = imgs
    return x, targets


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Whole-pixel shifts and pixel noise, so generated digits (never pixel-perfect) are judged like real ones.
    Shifts are whole pixels: interpolated sub-pixel shifts blur every image and hide the "blurred" style."""
    n = x.shape[0]
    shifts = torch.randint(-1, 2, (n, 2), generator=gen)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    out = torch.stack([padded[i, :, 1 + dy:17 + dy, 1 + dx:17 + dx] for i, (dy, dx) in enumerate(shifts.tolist())])
    return (out + 0.05 * torch.randn(out.shape, generator=gen)).clamp(-1, 1)


def train_judge(train: Split, held_out: Split, steps: int, seed: int = 0, batch: int = 64, log=print):
    """Returns the judge and a report with held-out accuracies (plain digits, styled digits, each style)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    styles = STYLE_NAMES
    net = JudgeNet(len(styles))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * (1 - step / steps))
        idx = torch.randint(0, len(train.labels), (batch,), generator=gen)
        x, y_style = styled_batch(train, idx, rng, styles)
        d_logits, s_logits = net(_augment(x, gen))
        loss = F.cross_entropy(d_logits, train.labels[idx]) + F.binary_cross_entropy_with_logits(
            s_logits, y_style, pos_weight=torch.full((len(styles),), 2.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    judge = Judge(net, styles)
    report = evaluate_judge(judge, held_out)
    k = max(1, min(20, steps // 5))
    report.update(steps=steps, seconds=round(time.perf_counter() - t0, 1),
                  train_loss_first=round(sum(losses[:k]) / k, 4), train_loss_last=round(sum(losses[-k:]) / k, 4))
    if log:
        log(f"  judge: held-out real accuracy {report['digit_accuracy_real']:.4f}, styled "
            f"{report['digit_accuracy_styled']:.4f}, style accuracy {report['style_accuracy_mean']:.4f} "
            f"({report['seconds']:.0f}s)")
    return judge, report


def evaluate_judge(judge: Judge, held_out: Split, seed: int = 1) -> dict:
    """Held-out accuracy on plain digits, on styled digits, and per style (present vs absent)."""
    real = (judge.digits(held_out.images) == held_out.labels).float().mean().item()
    idx = torch.arange(len(held_out.labels))
    x, y = styled_batch(held_out, idx, random.Random(seed), judge.styles)
    styled = (judge.digits(x) == held_out.labels).float().mean().item()
    pred = (judge.style_probs(x) > judge.threshold).float()
    per_style = {}
    for i, s in enumerate(judge.styles):
        single = apply_styles(held_out.images, [s])
        tpr = (judge.style_probs(single)[:, i] > judge.threshold).float().mean().item()
        per_style[s] = {"accuracy_mixed": round((pred[:, i] == y[:, i]).float().mean().item(), 4),
                        "detected_when_applied": round(tpr, 4)}
    fpr = (judge.style_probs(held_out.images) > judge.threshold).any(1).float().mean().item()
    return {
        "by_style_count": by_style_count(judge, held_out, seed),
        "digit_accuracy_real": round(real, 4), "digit_accuracy_styled": round(styled, 4),
        "style_accuracy_mean": round(float(np.mean([v["accuracy_mixed"] for v in per_style.values()])), 4),
        "plain_images_with_a_false_style": round(fpr, 4), "per_style": per_style, "n_held_out": len(idx),
    }


SYMMETRIC_DIGITS = (0, 1, 8)  # "mirrored" cannot show on these


def by_style_count(judge: Judge, held_out: Split, seed: int = 1) -> dict[str, dict[str, float]]:
    """Held-out renders with exactly 1, 2 and 3 compatible styles: the right digit, exactly the styles applied
    (no more, no fewer), and both (what the faithfulness suite asks of each image)."""
    idx = torch.arange(len(held_out.labels))
    symmetric = torch.isin(held_out.labels, torch.tensor(SYMMETRIC_DIGITS))
    out = {}
    for k in (1, 2, 3):
        x, y = styled_batch(held_out, idx, random.Random(seed + k), judge.styles, k=k)
        digit = judge.digits(x) == held_out.labels
        agree = (judge.style_probs(x) > judge.threshold).float() == y
        agree[:, judge.styles.index("mirrored")] |= symmetric  # nobody can see a mirrored 0, 1 or 8
        exact = agree.all(1)
        out[str(k)] = {"digit": round(digit.float().mean().item(), 4), "styles_exact": round(exact.float().mean().item(), 4),
                       "both": round((digit & exact).float().mean().item(), 4)}
    return out


def save_judge(judge: Judge, folder: Path, report: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.net.state_dict().items()}, str(folder / "judge.safetensors"))
    meta = {"styles": list(judge.styles), "threshold": judge.threshold,
            "triggers": {st.name: st.trigger for st in STYLES if st.name in judge.styles}, "feature_dim": FEATURE_DIM,
            "input": "1x16x16 in [-1, 1] (ink +1)", "report": report or {}}
    (folder / "judge.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder
