"""Calibrating the offline planner's relevance floor for the digits world's catalog.

A task's candidates always come back (retrieval ranks the whole catalog), so without a floor "a seven" gets
a frame and "a watercolor fox" a digit style. The floor is the lowest reranked score a candidate needs to
serve a task. Dev tasks: each world style in the words people use for it (alone and with a digit, which
should pick that style's adapter), and tasks no adapter serves (a digit alone, out-of-domain subjects and
styles, which should pick none). Tasks split by a hash into a training and a held-out part; the floor is
chosen by 5-fold cross-validation inside the training part (an unasked style added costs twice a missed
paraphrase) and reported on held-out, never tuned there.

Real out-of-domain tasks come from `../shared/data/prompts/civitai_prompts.jsonl` when it is here: each prompt
split into task phrases as the offline planner splits it (agent/planner.split_tasks), the prompt's side of the
split fixed by `evals/rank_train.is_heldout` (the file's other users' split), so training phrases come from
training prompts only and held-out ones (not also in training) from held-out prompts only. None of these prompts
asks for a digit style, so each phrase should get no adapter ("flipped hair" is not Mirror Writing); a phrase
that is itself a dev task ("blurry") is left out.

`python -m loracle.evals.relevance_floor` writes `tools/artifacts/relevance_floor.json`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from pathlib import Path

from loracle.agent.planner import split_tasks
from loracle.evals.rank_train import is_heldout as is_heldout_prompt
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
MAX_REAL = 400  # real phrases per side: enough to outnumber the dev tasks, few enough to fit on 2 cores
OUT = Path(__file__).resolve().parents[1] / "tools" / "artifacts" / "relevance_floor.json"
REAL_PROMPTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts" / "civitai_prompts.jsonl"


def dev_tasks() -> list[tuple[str, str | None]]:
    """(task text, the adapter name that should serve it or None)."""
    tasks: list[tuple[str, str | None]] = []
    for i, (name, phrases) in enumerate(STYLE_PHRASES.items()):
        for j, phrase in enumerate(phrases):
            tasks.append((phrase, name))
            tasks.append((f"{phrase} {DIGIT_WORDS[(i + j) % 10]}", name))
    return tasks + [(text, None) for text in UNSERVED]


def real_phrases(path: Path = REAL_PROMPTS) -> tuple[list[str], list[str]]:
    """(training, held-out) out-of-domain task phrases of real prompts, each side at most MAX_REAL, chosen by a
    hash of the phrase; empty when the file is absent."""
    if not path.is_file():
        return [], []
    dev = {text.lower() for text, _ in dev_tasks()}
    sides: tuple[set[str], set[str]] = (set(), set())
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            phrases = {t.phrase for t in split_tasks(row["prompt"]) if t.phrase.lower() not in dev}
            sides[is_heldout_prompt(row["id"])].update(phrases)
    train, held = sides
    return _hash_sample(train), _hash_sample(held - train)


def _hash_sample(phrases: set[str]) -> list[str]:
    return sorted(phrases, key=lambda p: hashlib.sha256(p.encode()).digest())[:MAX_REAL]


def is_heldout(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] < 77  # ~30%


Top = tuple[str, float, bool]  # the top candidate's name, score, and whether its card covers the task's words
Row = tuple[Top | None, str | None]
Floors = tuple[float, float]  # the floor for a covering candidate, and for one that does not cover the task


def picked(top: Top | None, floors: Floors) -> str | None:
    """The adapter these floors let serve the task, if any."""
    return top[0] if top and top[1] >= floors[0 if top[2] else 1] else None


def correct(top: Top | None, wanted: str | None, floors: Floors) -> bool:
    """With these floors, does the task get exactly what it should (its adapter as the top pick, or nothing)?"""
    return picked(top, floors) == wanted


def accuracy(rows: list[Row], floors: Floors) -> float:
    return sum(correct(top, wanted, floors) for top, wanted in rows) / max(len(rows), 1)


def served_share(rows: list[Row], floors: Floors) -> float:
    """The share of these tasks that get an adapter at all."""
    return sum(picked(top, floors) is not None for top, _ in rows) / max(len(rows), 1)


def cost(rows: list[Row], floors: Floors) -> float:
    """Errors, an unasked adapter added counting ADDED_COST times: the user sees a style they did not ask for,
    where a missed paraphrase still leaves the words in the prompt."""
    total = 0.0
    for top, wanted in rows:
        chosen = picked(top, floors)
        if chosen != wanted:
            total += ADDED_COST if chosen is not None else 1.0
    return total


def fit_one(rows: list[Row]) -> float:
    """The single floor with the lowest cost on these rows, among midpoints between the observed top scores."""
    scores = sorted({top[1] for top, _ in rows if top}) or [0.0]
    options = [scores[0] - 1e-3] + [(a + b) / 2 for a, b in zip(scores, scores[1:])] + [scores[-1] + 1e-3]
    return min(options, key=lambda f: (cost(rows, (f, f)), abs(f - statistics.median(options))))


def fit(rows: list[Row], two_floors: bool = True) -> Floors:
    """The lowest-cost floors; with `two_floors` one per group (covering or not: the cost adds up over rows,
    so each group's floor is fitted on its own rows), else one floor for both."""
    if not two_floors:
        floor = fit_one(rows)
        return floor, floor
    return fit_one([r for r in rows if r[0] and r[0][2]]), fit_one([r for r in rows if not (r[0] and r[0][2])])


def cross_validated_floor(train: list[Row], two_floors: bool = True) -> tuple[Floors, float, float]:
    """Floors fitted on each fold's rest and scored on the fold: the median floors, the mean fold accuracy and
    the mean fold cost."""
    fitted, scores, costs = [], [], []
    for k in range(FOLDS):
        fold = train[k::FOLDS]
        floors = fit([r for i, r in enumerate(train) if i % FOLDS != k], two_floors)
        fitted.append(floors)
        scores.append(accuracy(fold, floors))
        costs.append(cost(fold, floors))
    floors = (statistics.median(f[0] for f in fitted), statistics.median(f[1] for f in fitted))
    return floors, statistics.fmean(scores), statistics.fmean(costs)


def main() -> None:
    from loracle.agent.catalog import search_catalog
    from loracle.agent.service import open_agent
    from loracle.agent.settings import Settings
    from loracle.db.catalog import get_adapters
    from loracle.tools.relevance import covers

    settings = Settings().model_copy(update={"home": Path(tempfile.mkdtemp(prefix="loracle-floor-")), "base_model": "world",
                                             "llm_model": None})
    tasks = dev_tasks()
    real_train, real_held = real_phrases()
    if not real_train:
        print(f"{REAL_PROMPTS.name} not found (the shared data folder is not here): calibrating on the dev tasks only")
    texts = [t for t, _ in tasks] + real_train + real_held
    print(f"retrieving for {len(texts)} tasks ({len(real_train)} + {len(real_held)} real phrases)", flush=True)
    with open_agent(settings) as agent:
        ctx = agent.context
        hits = search_catalog(ctx.db, ctx.embedder, ctx.settings, texts, k=8, base_models=ctx.base_models, strategy="rerank")
        with ctx.db.connection() as conn:
            cards = get_adapters(conn, list({h.adapter_id for items in hits.values() for h in items}))
    card_text = {i: " ".join([c["name"], *c["tags"], *c["trigger_words"],
                                  c.get("refined_description") or (c.get("description") or "")[:300]]) for i, c in cards.items()}

    def rows(labelled: list[tuple[str, str | None]]) -> list[Row]:
        tops = {t: hits[t.strip()][0] if hits.get(t.strip()) else None for t, _ in labelled}
        return [((top.name, top.score, covers(t, card_text[top.adapter_id])) if (top := tops[t]) else None, wanted)
                for t, wanted in labelled]

    train = rows([(t, w) for t, w in tasks if not is_heldout(t)] + [(t, None) for t in real_train])
    heldout = rows([(t, w) for t, w in tasks if is_heldout(t)])
    held_real = rows([(t, None) for t in real_held])
    positives = rows([(t, w) for t, w in tasks if w is not None])
    one = cross_validated_floor(train, two_floors=False)
    two = cross_validated_floor(train, two_floors=True)
    floors, cv, _ = two if two[2] < one[2] else one
    previous = previous_floors()

    def measured(name: str, at: Floors) -> dict:
        return {f"{name}heldout_accuracy": round(accuracy(heldout + held_real, at), 4),
                f"{name}heldout_real_served": round(served_share(held_real, at), 4),
                f"{name}positives_recall": round(accuracy(positives, at), 4)}

    report = {"digits": round(floors[0], 4), "digits_uncovered": round(floors[1], 4), "cv_accuracy": round(cv, 4),
              "cv_cost_one_floor": round(one[2], 2), "cv_cost_two_floors": round(two[2], 2), **measured("", floors),
              **(measured("previous_", previous) if previous else {}),
              "heldout_accuracy_without_floor": round(accuracy(heldout + held_real, (float("-inf"),) * 2), 4),
              "train_tasks": len(train), "heldout_tasks": len(heldout) + len(held_real),
              "real_phrases": {"train": len(real_train), "heldout": len(real_held)},
              "note": "reranked score a candidate needs to serve a task, per engine family's catalog, when its card "
                      "covers the task's words and (_uncovered) when not (evals/relevance_floor.py, tools/relevance.py)"}
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def previous_floors() -> Floors | None:
    """The committed floors, to compare against."""
    if not OUT.is_file():
        return None
    data = json.loads(OUT.read_text())
    return (data["digits"], data.get("digits_uncovered", data["digits"])) if "digits" in data else None


if __name__ == "__main__":
    main()
