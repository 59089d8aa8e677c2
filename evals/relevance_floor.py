"""Calibrating the offline planner's relevance floor for the digits world's catalog.

A task's candidates always come back (retrieval ranks the whole catalog), so without a floor "a seven" gets
a frame and "a watercolor fox" a digit style. The floor is the lowest reranked score a candidate needs to
serve a task. Dev tasks: each world style in the words people use for it (alone and with a digit, which
should pick that style's adapter), and tasks no adapter serves (a digit alone, out-of-domain subjects and
styles, which should pick none). Tasks split by a hash into a training and a held-out part; the floor is
chosen by 5-fold cross-validation inside the training part (an unasked style added costs twice a missed
paraphrase) and reported on held-out, never tuned there.

`python -m loracle.evals.relevance_floor` writes `tools/artifacts/relevance_floor.json`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from pathlib import Path

from loracle.generation.world.judge import DIGIT_WORDS

STYLE_PHRASES = {
    "Boldface Digits": ["bold", "thick strokes", "heavy lines", "boldface", "a bold look"],
    "Hairline Digits": ["thin", "fine strokes", "hairline", "thin lines", "a thin pen"],
    "Italic Digits": ["slanted", "italic", "leaning right", "italicised", "slanting"],
    "Mirror Writing": ["mirrored", "mirror image", "flipped", "mirror writing", "reversed left to right"],
    "Negative Ink": ["inverted", "negative", "inverted colors", "white on black", "negative ink"],
    "Hollowline Digits": ["outlined", "hollow", "outline only", "hollow strokes", "outlined strokes"],
    "Soft Focus Digits": ["blurred", "blurry", "soft focus", "out of focus", "blurred edges"],
    "Framed Digits": ["boxed", "framed", "in a box", "with a border", "in a frame"],
}
UNSERVED = [
    *DIGIT_WORDS, "the digit 4", "number seven", "a handwritten two", "digit", "handwritten",
    "watercolor fox", "a cat", "tongue out digital painting", "one eye closed", "oil painting", "anime girl",
    "castle at night", "masterpiece", "sunset over the sea", "cyberpunk city", "portrait of a woman", "blue eyes",
    "smiling", "misty forest", "a dog", "pixel art", "pencil sketch", "red hair", "photorealistic", "dragon",
    "studio lighting", "1girl", "long hair", "landscape", "baroque", "chibi", "neon lights", "vintage photo",
]
FOLDS = 5
ADDED_COST = 2.0
OUT = Path(__file__).resolve().parents[1] / "tools" / "artifacts" / "relevance_floor.json"


def dev_tasks() -> list[tuple[str, str | None]]:
    """(task text, the adapter name that should serve it or None)."""
    tasks: list[tuple[str, str | None]] = []
    for i, (name, phrases) in enumerate(STYLE_PHRASES.items()):
        for j, phrase in enumerate(phrases):
            tasks.append((phrase, name))
            tasks.append((f"{phrase} {DIGIT_WORDS[(i + j) % 10]}", name))
    return tasks + [(text, None) for text in UNSERVED]


def is_heldout(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] < 77  # ~30%


def correct(top: tuple[str, float] | None, wanted: str | None, floor: float) -> bool:
    """With this floor, does the task get exactly what it should (its adapter as the top pick, or nothing)?"""
    picked = top[0] if top and top[1] >= floor else None
    return picked == wanted


def accuracy(rows: list[tuple[tuple[str, float] | None, str | None]], floor: float) -> float:
    return sum(correct(top, wanted, floor) for top, wanted in rows) / max(len(rows), 1)


def cost(rows: list[tuple[tuple[str, float] | None, str | None]], floor: float) -> float:
    """Errors, an unasked adapter added counting ADDED_COST times: the user sees a style they did not ask for,
    where a missed paraphrase still leaves the words in the prompt."""
    total = 0.0
    for top, wanted in rows:
        if not correct(top, wanted, floor):
            picked = top[0] if top and top[1] >= floor else None
            total += ADDED_COST if picked is not None and picked != wanted else 1.0
    return total


def fit(rows: list[tuple[tuple[str, float] | None, str | None]]) -> float:
    """The floor with the lowest cost on these rows, among midpoints between the observed top scores."""
    scores = sorted({top[1] for top, _ in rows if top})
    options = [scores[0] - 1e-3] + [(a + b) / 2 for a, b in zip(scores, scores[1:])] + [scores[-1] + 1e-3]
    return min(options, key=lambda f: (cost(rows, f), abs(f - statistics.median(options))))


def cross_validated_floor(train: list[tuple[tuple[str, float] | None, str | None]]) -> tuple[float, float]:
    """Floor fitted on each fold's rest and scored on the fold; the median floor and the mean fold accuracy."""
    floors, scores = [], []
    for k in range(FOLDS):
        fold = train[k::FOLDS]
        rest = [r for i, r in enumerate(train) if i % FOLDS != k]
        floor = fit(rest)
        floors.append(floor)
        scores.append(accuracy(fold, floor))
    return statistics.median(floors), statistics.fmean(scores)


def main() -> None:
    from loracle.agent.catalog import search_catalog
    from loracle.agent.service import open_agent
    from loracle.agent.settings import Settings

    settings = Settings().model_copy(update={"home": Path(tempfile.mkdtemp(prefix="loracle-floor-")), "base_model": "world",
                                             "llm_model": None})
    tasks = dev_tasks()
    with open_agent(settings) as agent:
        ctx = agent.context
        hits = search_catalog(ctx.db, ctx.embedder, ctx.settings, [t for t, _ in tasks], k=8,
                              base_models=ctx.base_models, strategy="rerank")
    rows = [((hits[t][0].name, hits[t][0].score) if hits.get(t) else None, wanted) for t, wanted in tasks]
    train = [r for (t, _), r in zip(tasks, rows) if not is_heldout(t)]
    heldout = [r for (t, _), r in zip(tasks, rows) if is_heldout(t)]
    floor, cv = cross_validated_floor(train)
    report = {"digits": round(floor, 4), "cv_accuracy": round(cv, 4), "heldout_accuracy": round(accuracy(heldout, floor), 4),
              "heldout_accuracy_without_floor": round(accuracy(heldout, float("-inf")), 4),
              "train_tasks": len(train), "heldout_tasks": len(heldout),
              "note": "reranked score a candidate needs to serve a task, per engine family's catalog (evals/relevance_floor.py)"}
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
