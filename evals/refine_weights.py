"""Weight extraction against hand-labelled cards: `python -m loracle.evals.refine_weights`.

Labels (evals/data/weight_labels.jsonl) hold only a Civitai id, the weight a person chose after reading
the card and its example prompts, a split and a short note; the card text is read from ../shared/data.
Split "dev" was labelled while the extractor was written (read it as a training score); "heldout" was
labelled afterwards, without looking at the extractor's output.
Baselines: the catalog's own regex field `recommended_weight` (0.8 where it has none) and 0.8 everywhere.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from loracle.tools.refine.weights import DEFAULT_WEIGHT, recommend_weight

LABELS = Path(__file__).parent / "data" / "weight_labels.jsonl"
CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "catalog" / "civitai_loras.jsonl"


def load_labels(path: Path = LABELS, split: str | None = None) -> dict[int, float]:
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("id"), int) or not isinstance(row.get("weight"), (int, float)):
            raise ValueError(f"{path}:{number}: expected an integer 'id' and a numeric 'weight'")
        if split is None or row.get("split") == split:
            labels[row["id"]] = float(row["weight"])
    return labels


def load_cards(path: Path, ids: set[int]) -> dict[int, dict]:
    cards = {}
    with path.open() as handle:
        for line in handle:
            row = json.loads(line)
            if row["id"] in ids:
                cards[row["id"]] = row
    missing = ids - set(cards)
    if missing:
        raise ValueError(f"labelled ids not in {path}: {sorted(missing)[:10]}")
    return cards


def offline(card: dict) -> float:
    names = [(card.get("file") or {}).get("name") or "", card["name"], *card.get("trigger_words", [])]
    return recommend_weight(card.get("description") or "", card.get("example_prompts") or [], names).weight


METHODS: dict[str, Callable[[dict], float]] = {
    "offline refiner": offline,
    "catalog regex field": lambda card: card["recommended_weight"] if card["recommended_weight"] is not None else DEFAULT_WEIGHT,
    "constant 0.8": lambda card: DEFAULT_WEIGHT,
}


def evaluate(labels: dict[int, float], cards: dict[int, dict]) -> list[dict]:
    rows = []
    for name, method in METHODS.items():
        errors = [abs(method(cards[i]) - w) for i, w in labels.items()]
        rows.append({
            "method": name,
            "n": len(errors),
            "within_0.05": sum(e <= 0.05 + 1e-9 for e in errors) / len(errors),
            "within_0.1": sum(e <= 0.1 + 1e-9 for e in errors) / len(errors),
            "mae": sum(errors) / len(errors),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--show-errors", action="store_true", help="List the cards the offline refiner gets wrong.")
    args = parser.parse_args()
    if not args.catalog.is_file():
        raise SystemExit(f"error: catalog not found: {args.catalog}")
    every = load_labels(args.labels)
    cards = load_cards(args.catalog, set(every))
    for split in ("dev", "heldout", None):
        labels = load_labels(args.labels, split)
        print(f"\n{len(labels)} hand-labelled cards, split {split or 'all'} ({args.labels.name})")
        print(f"{'method':<22}{'exact (±0.05)':>15}{'±0.1':>8}{'MAE':>8}")
        for row in evaluate(labels, cards):
            print(f"{row['method']:<22}{row['within_0.05']:>15.1%}{row['within_0.1']:>8.1%}{row['mae']:>8.3f}")
    if args.show_errors:
        for i, w in every.items():
            got = offline(cards[i])
            if abs(got - w) > 0.05 + 1e-9:
                print(f"  {i}: label {w}, offline {got}")

if __name__ == "__main__":
    main()
