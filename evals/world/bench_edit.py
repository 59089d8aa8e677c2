"""`python -m loracle.evals.world.bench_edit`: inpainting and image-to-image in the digits world, through `generation.Engine`.

(a) Inpainting: the bottom half of held-out real digits is masked and repainted with the prompt naming the
true digit. Reported: the unmasked half's pixel error (mean abs, [0, 1] units), how much the masked half
moved, and the judge's digit accuracy, next to two references: the original digits, and the digits with
the masked half blanked to paper (what the judge makes of the kept half alone).
(b) Image-to-image with a style adapter: held-out digits re-drawn at strength 0.5 and 0.7 with one style
LoRA and its trigger word. Reported per style: the judge detects the style, and the digit class is kept;
next to the same adapter's text-to-image numbers (its ceiling: an adapter that loses the digit when drawing
from scratch loses it in img2img too).
Targets (issue 10): (a) accuracy >= 80%; (b) style detected >= 70% and digit kept >= 90%.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from loracle.evals.world.bench import World, _cfg, ci95, finish
from loracle.evals.world.catalog import lora_filename
from loracle.evals.world.data import DIGIT_WORDS, SIZE
from loracle.evals.world.judge import to_tensor
from loracle.evals.world.styles import STYLES
from loracle.generation.world.paths import world_paths


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 16, 16) in [-1, 1] -> 8-bit grayscale PIL, as an uploaded PNG would be."""
    return Image.fromarray(((x[0].numpy() + 1) * 127.5).round().astype(np.uint8), mode="L")


def pick_held_out(w: World, n: int, seed: int = 0) -> tuple[list[int], torch.Tensor]:
    """n held-out indices, as balanced over the ten digits as the split allows (seeded)."""
    rng = np.random.default_rng(seed)
    labels = w.held_out.labels.numpy()
    per = [rng.permutation(np.flatnonzero(labels == d)).tolist() for d in range(10)]
    idx = [per[i % 10][i // 10] for i in range(n)]
    return idx, w.held_out.labels[idx]


def edit(w: World, sources: list[Image.Image], labels: torch.Tensor, suffix: str = "", *, steps: int, cfg: float,
         strength: float, mask: Image.Image | None = None, feather: int = 0, mix: dict[str, float] | None = None,
         seed0: int = 0, batch: int = 100) -> tuple[torch.Tensor, np.ndarray]:
    """Edit each source with the prompt naming its digit: one engine request per digit (one input per
    image), so the batch shares one prompt. Image i gets seed seed0 + i. Returns images and evaluated steps."""
    from loracle.generation.engine import GenerationRequest
    from loracle.generation.skipping import SkipSettings

    images = torch.empty(len(sources), 1, SIZE, SIZE)
    evals = np.zeros(len(sources))
    g = _cfg(cfg)
    for d in range(10):
        idx = (labels == d).nonzero().flatten().tolist()
        if not idx:
            continue
        req = GenerationRequest(prompt=f"a handwritten {DIGIT_WORDS[d]}{suffix}", mixes=[dict(mix or {})] * len(idx),
                                seeds=[seed0 + i for i in idx], steps=steps, scheduler="ddim", guidance=g,
                                skipping=SkipSettings(threshold=0.0), image=[sources[i] for i in idx], mask=mask,
                                strength=strength, mask_feather=feather, max_batch=batch)
        r = w.engine.generate(req)
        images[idx] = to_tensor(r.images)
        evals[idx] = np.array(r.nfe) / len(g.branches)
    return images, evals


def bench_inpaint(w: World, n: int, steps: int, cfg: float, feathers=(0, 2)) -> list[dict]:
    idx, labels = pick_held_out(w, n)
    originals = w.held_out.images[idx]
    sources = [to_pil(x) for x in originals]
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[SIZE // 2:] = 255
    mask = Image.fromarray(m, mode="L")
    keep, paint = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    originals = to_tensor(sources)  # the 8-bit round trip the engine sees
    blanked = originals.clone()
    blanked[:, :, paint] = -1.0
    rows = [{"method": "original digits (reference)", "keep_err": 0.0, "paint_change": 0.0,
             "accuracy": (w.judge.digits(originals) == labels).float().mean().item()},
            {"method": "bottom half blanked (reference)", "keep_err": 0.0,
             "paint_change": float((blanked - originals)[:, :, paint].abs().mean() / 2),
             "accuracy": (w.judge.digits(blanked) == labels).float().mean().item()}]
    for feather in feathers:
        t0 = time.perf_counter()
        images, evals = edit(w, sources, labels, steps=steps, cfg=cfg, strength=1.0, mask=mask, feather=feather)
        rows.append({"method": f"inpaint, strength 1, feather {feather}px",
                     "keep_err": float((images - originals)[:, :, keep].abs().mean() / 2),  # [-1, 1] -> [0, 1] units
                     "paint_change": float((images - originals)[:, :, paint].abs().mean() / 2),
                     "accuracy": (w.judge.digits(images) == labels).float().mean().item(),
                     "evals": float(evals.mean()), "seconds": round(time.perf_counter() - t0, 1)})
    print(f"\n== (a) Inpainting the bottom half of held-out digits, prompt names the true digit; {steps} DDIM steps, "
          f"CFG {cfg}, n={n}")
    print(f"{'method':36s} {'kept-half err':>13s} {'masked-half change':>19s} {'digit accuracy':>20s}")
    for r in rows:
        print(f"{r['method']:36s} {r['keep_err']:13.4f} {r['paint_change']:19.4f} "
              f"{r['accuracy']:12.3f} +/-{ci95(r['accuracy'], n):.3f}")
    print("target: digit accuracy >= 0.80 (kept-half error in [0, 1] pixel units; feathered masks blend a band "
          "into the kept half, so it is counted there)")
    return rows


def bench_img2img(w: World, n: int, steps: int, cfg: float, strengths=(0.5, 0.7)) -> list[dict]:
    idx, labels = pick_held_out(w, n, seed=1)
    sources = [to_pil(x) for x in w.held_out.images[idx]]
    rows = []
    for s in STYLES:
        if not (w.paths.loras / lora_filename(s)).is_file():
            continue
        mix = {lora_filename(s)[:-12]: 1.0}
        before = np.mean([s.name in f for f in w.judge.detect(to_tensor(sources))])
        # the adapter's own text-to-image numbers (same digits, steps, CFG): the ceiling img2img is judged against
        t2i = w.sample(n, steps=steps, guidance=_cfg(cfg), mix=mix, suffix=f", {s.trigger}", seed0=300_000)
        rows.append({"style": s.name, "strength": 1.0, "method": "text-to-image",
                     "detected": float(np.mean([s.name in f for f in w.judge.detect(t2i.images)])),
                     "detected_before": float("nan"), "digit_kept": w.adherence(t2i), "evals": float(t2i.evals.mean()),
                     "seconds": round(t2i.seconds, 1)})
        for strength in strengths:
            t0 = time.perf_counter()
            images, evals = edit(w, sources, labels, f", {s.trigger}", steps=steps, cfg=cfg, strength=strength, mix=mix,
                                 seed0=300_000)
            found = w.judge.detect(images)
            rows.append({"style": s.name, "strength": strength, "method": "img2img",
                         "detected": float(np.mean([s.name in f for f in found])), "detected_before": float(before),
                         "digit_kept": (w.judge.digits(images) == labels).float().mean().item(),
                         "evals": float(evals.mean()), "seconds": round(time.perf_counter() - t0, 1)})
    print(f"\n== (b) Image-to-image with one style adapter (weight 1, trigger in the prompt), held-out digits; "
          f"{steps} DDIM steps, CFG {cfg}, n={n} per row; 'text-to-image' rows: the same adapter drawing from scratch "
          "(digit = the one prompted), the ceiling for img2img")
    print(f"{'style':10s} {'method':>13s} {'strength':>8s} {'evals':>6s} {'style detected':>15s} {'(on the input)':>15s} "
          f"{'digit kept':>11s}")
    for r in rows:
        print(f"{r['style']:10s} {r['method']:>13s} {r['strength']:8.1f} {r['evals']:6.1f} {r['detected']:15.3f} "
              f"{r['detected_before']:15.3f} {r['digit_kept']:11.3f}")
    t2i_ok = {r["style"] for r in rows if r["method"] == "text-to-image" and r["digit_kept"] >= 0.9}
    for label, keep in (("all styles", lambda r: True),
                        (f"styles whose text-to-image keeps the digit >= 0.9 ({len(t2i_ok)})", lambda r: r["style"] in t2i_ok)):
        for strength in strengths:
            sel = [r for r in rows if r["method"] == "img2img" and r["strength"] == strength and keep(r)]
            if sel:
                print(f"mean over {label}, strength {strength}: style detected {np.mean([r['detected'] for r in sel]):.3f}, "
                      f"digit kept {np.mean([r['digit_kept'] for r in sel]):.3f}")
    print("targets: style detected >= 0.70, digit kept >= 0.90")
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inpaint-samples", type=int, default=200)
    ap.add_argument("--style-samples", type=int, default=100, help="held-out digits per (style, strength)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.7])
    ap.add_argument("--only", nargs="+", choices=("inpaint", "img2img"), default=["inpaint", "img2img"])
    ap.add_argument("--root", default=None, help="world folder (default: the committed artifacts)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    w = World(world_paths(args.root))
    out: dict = {"args": vars(args)}
    if "inpaint" in args.only:
        out["inpaint"] = bench_inpaint(w, args.inpaint_samples, args.steps, args.cfg)
    if "img2img" in args.only:
        out["img2img"] = bench_img2img(w, args.style_samples, args.steps, args.cfg, tuple(args.strengths))
    return finish(out, t0, args.json)


if __name__ == "__main__":
    main()
