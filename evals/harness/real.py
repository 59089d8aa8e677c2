"""Real-model mode: Stylus's protocol on the user's own base model, adapters and CLIP model.

For each prompt, k images from loracle (the whole agent: plan, retrieve, select, compose, sample) and k from
the bare base model with the same seeds. Reported per arm: CLIP score (100 x cosine of image and prompt
embeddings, clipped at 0, as torchmetrics computes it), best-of-k CLIP score (the best of the prompt's k images,
averaged over prompts), and the Frechet distance of the generated set to a folder of real images. FD uses the
CLIP model's image embeddings (FD in CLIP space, which Kynkaanniemi et al. 2023 recommend over Inception
features; Inception weights cannot be fetched offline), so compare FD only between runs with the same CLIP model.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from loracle.evals.harness.registry import RunContext, suite

PROMPT_FIELDS = ("prompt", "Prompt", "text", "caption")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def load_prompts(path: Path, limit: int | None = None) -> list[str]:
    """Prompts from a .txt (one per line, # comments), a .jsonl (a prompt/text/caption field, e.g. the
    ../shared/data/queries files), a PartiPrompts .tsv (its `Prompt` column) or COCO captions .json."""
    if not path.is_file():
        raise ValueError(f"no such prompts file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompts.append(next(record[f] for f in PROMPT_FIELDS if isinstance(record.get(f), str)))
            except (json.JSONDecodeError, AttributeError, StopIteration):
                raise ValueError(f"{path}:{number}: not a JSON object with one of the fields {PROMPT_FIELDS}") from None
    elif path.suffix == ".tsv":
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
        if rows and "Prompt" not in rows[0]:
            raise ValueError(f"{path}: a .tsv needs a 'Prompt' column (PartiPrompts format)")
        prompts = [row["Prompt"] for row in rows]
    elif path.suffix == ".json":
        try:
            prompts = [a["caption"] for a in json.loads(text)["annotations"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}: a .json must be COCO captions ({{'annotations': [{{'caption': ...}}]}})") from None
    else:
        prompts = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    prompts = [p.strip() for p in prompts if p.strip()][: limit or None]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def _projected(output):
    """transformers 4 returns the projected embeddings; 5 returns an output whose pooler_output holds them."""
    return output if hasattr(output, "norm") else output.pooler_output


class ClipScorer:
    """A user-supplied CLIP model folder (transformers format, safetensors weights only)."""

    def __init__(self, folder: Path, batch_size: int = 32) -> None:
        from transformers import CLIPModel, CLIPProcessor

        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder}: not a CLIP model folder (no config.json); pass e.g. a local "
                             "openai/clip-vit-large-patch14 snapshot")
        if not any(folder.glob("*.safetensors")):
            raise ValueError(f"{folder}: no .safetensors weights; pickled checkpoints (.bin/.pt) are refused")
        try:
            self.model = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
            self.processor = CLIPProcessor.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: cannot load a CLIP model with safetensors weights and a processor ({exc})") from None
        self.name = folder.name
        self.batch_size = batch_size

    def image_embeddings(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                pixels = self.processor(images=[im.convert("RGB") for im in images[i:i + self.batch_size]],
                                        return_tensors="pt")["pixel_values"]
                features = _projected(self.model.get_image_features(pixel_values=pixels))
                out.append(torch.nn.functional.normalize(features, dim=-1))
        return torch.cat(out).numpy()

    def text_embeddings(self, prompts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            tokens = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
            features = _projected(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                               attention_mask=tokens["attention_mask"]))
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def scores(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """CLIP score per (image, prompt) pair: 100 * max(cos, 0)."""
        cos = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)
        return 100 * np.clip(cos, 0, None)


def real_image_embeddings(scorer: ClipScorer, folder: Path, limit: int) -> tuple[np.ndarray, int]:
    """Embeddings of up to `limit` readable images in `folder` (recursively), and how many files were unreadable."""
    if not folder.is_dir():
        raise ValueError(f"no such folder of real images: {folder}")
    images, unreadable = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        if len(images) >= limit:
            break
        try:
            images.append(_open_rgb(path))
        except (UnidentifiedImageError, OSError):
            unreadable += 1
    if len(images) < 2:
        raise ValueError(f"{folder}: needs at least 2 readable images for FD, found {len(images)}")
    return scorer.image_embeddings(images), unreadable


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _base_images(ctx, prompt: str, seeds: list[int]) -> list[Image.Image]:
    """The bare base model (no adapters) with the agent's own sampler settings and the same seeds."""
    from loracle.agent.sampler_settings import sample_settings
    from loracle.generation.engine import GenerationRequest

    engine = ctx.engine_factory()
    s = sample_settings(ctx, engine)
    request = GenerationRequest(prompt=prompt, seeds=seeds, steps=s.steps, scheduler=s.scheduler, guidance=s.guidance,
                                skipping=s.skipping)
    return engine.generate(request).images


def evaluate_real(ctx, prompts: list[str], scorer: ClipScorer, *, k: int, real_dir: Path | None, real_limit: int,
                  seed: int, progress) -> tuple[dict, dict]:
    """({arm: metrics}, {arm: first images}) for the `loracle` and `base` arms over the prompts."""
    from loracle.agent.threads import Threads
    from loracle.evals.world.judge import frechet_distance

    threads = Threads(ctx.db.url)
    arms: dict[str, dict] = {"loracle": {"scores": [], "embeddings": [], "seconds": 0.0, "adapters": []},
                             "base": {"scores": [], "embeddings": [], "seconds": 0.0}}
    grids: dict[str, list[Image.Image]] = {"loracle": [], "base": []}
    try:
        for i, prompt in enumerate(progress(prompts, desc="real-model")):
            turn_seed = seed + i
            started = time.perf_counter()
            state = threads.run_turn(ctx, f"eval-real-{uuid.uuid4().hex[:8]}", prompt, n_images=k, seed=turn_seed)
            arms["loracle"]["seconds"] += time.perf_counter() - started
            made = {"loracle": [ctx.images.open(im["path"], "generated image").convert("RGB") for im in state["images"]]}
            arms["loracle"]["adapters"].append(len({a for im in state["images"] for a in im["adapters"]}))
            started = time.perf_counter()
            made["base"] = _base_images(ctx, prompt, [im["seed"] for im in state["images"]])
            arms["base"]["seconds"] += time.perf_counter() - started
            for arm, images in made.items():
                arms[arm]["scores"].append(scorer.scores(images, [prompt] * len(images)))
                arms[arm]["embeddings"].append(scorer.image_embeddings(images))
                grids[arm] += images[:1]
    finally:
        threads.close()
    real = real_image_embeddings(scorer, real_dir, real_limit) if real_dir else None
    metrics = {}
    for arm, acc in arms.items():
        row = {"clip_score": round(float(np.mean(np.concatenate(acc["scores"]))), 3),
               f"clip_best_of_{k}": round(float(np.mean([s.max() for s in acc["scores"]])), 3),
               "s_per_prompt": round(acc["seconds"] / len(prompts), 3)}
        if real is not None:
            row["fd_clip"] = round(frechet_distance(np.concatenate(acc["embeddings"]), real[0]), 4)
        if "adapters" in acc:
            row["adapters_per_prompt"] = round(float(np.mean(acc["adapters"])), 2)
        metrics[arm] = row
    return metrics, grids


@suite("real", opt_in=True)
def real(ctx: RunContext) -> dict:
    """Stylus's protocol with the user's base model (LORACLE_BASE_MODEL), catalog, adapters and CLIP model."""
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import get_settings

    opts = ctx.options
    if not opts.get("prompts") or not opts.get("clip"):
        raise ValueError("the real suite needs --prompts FILE and --clip CLIP_MODEL_FOLDER")
    prompts = load_prompts(Path(opts["prompts"]), opts.get("limit") or (8 if ctx.quick else None))
    scorer = ClipScorer(Path(opts["clip"]))
    k = int(opts.get("k") or 4)
    agent_ctx = build_context(get_settings(), ctx.cache["user_db"])
    real_dir = Path(opts["real_images"]) if opts.get("real_images") else None
    metrics, grids = evaluate_real(agent_ctx, prompts, scorer, k=k, real_dir=real_dir,
                                   real_limit=int(opts.get("real_limit") or 5000), seed=ctx.seed, progress=ctx.progress)
    ctx.cache["real_grids"] = grids
    return {"metrics": metrics, "prompts": len(prompts), "k": k, "clip_model": scorer.name,
            "base_model": agent_ctx.settings.base_model, "real_images": str(real_dir) if real_dir else None}
