"""Small labelled catalogs for the retrieval and selection suites, so a quick run fits in minutes.

With ../shared/data present: the adapters labelled in the first N labelled queries plus a few hundred
distractors (the catalog's first lines that are not labelled), written to one JSONL. Without it: the
digits world's catalog and queries made from its styles ("a handwritten three, bold" -> Boldface Digits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loracle.evals.queries import load_queries

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class LabelledCatalog:
    catalog: Path  # catalog JSONL to import
    queries: Path  # labelled queries JSONL (../shared/data/queries format)
    source: str  # the adapters' `source` (namespace) that query labels refer to
    description: str


def real_slice(data: Path, folder: Path, n_queries: int, n_distractors: int) -> LabelledCatalog:
    """The first `n_queries` labelled dev queries, their adapters and `n_distractors` others."""
    queries = load_queries(data / "queries" / "dev.jsonl")[:n_queries]
    wanted = {i for q in queries for i in q.labels}
    keep, distractors = [], []
    with (data / "catalog" / "civitai_loras.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            ext = str(json.loads(line)["id"])
            if ext in wanted:
                keep.append(line)
            elif len(distractors) < n_distractors:
                distractors.append(line)
    folder.mkdir(parents=True, exist_ok=True)
    catalog = folder / "catalog_slice.jsonl"
    catalog.write_text("".join(keep + distractors), encoding="utf-8")
    ids = {q.id for q in queries}
    out = folder / "queries_slice.jsonl"
    with (data / "queries" / "dev.jsonl").open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            if line.strip() and str(json.loads(line).get("id")) in ids:
                dst.write(line)
    return LabelledCatalog(catalog, out, "civitai", f"real catalog slice: {len(keep)} labelled adapters of "
                           f"{len(queries)} dev queries + {len(distractors)} distractors")


def world_queries(folder: Path) -> LabelledCatalog:
    """The digits world's catalog, and one query per (style, digit) labelled with that style's adapter."""
    from loracle.evals.world.catalog import adapter_id
    from loracle.evals.world.data import DIGIT_WORDS
    from loracle.evals.world.styles import STYLES
    from loracle.generation.world.paths import world_paths

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "world_queries.jsonl"
    rows = []
    for s in STYLES:
        for d in (0, 3, 7):
            word = s.prompt_words[-1]
            rows.append({"id": f"world-{s.name}-{d}", "prompt": f"a handwritten {DIGIT_WORDS[d]}, {word}",
                         "topics": {word: [adapter_id(s)]}})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return LabelledCatalog(world_paths().catalog, out, "digits-world", f"digits world: {len(STYLES)} adapters, {len(rows)} queries")


def labelled_catalog(folder: Path, *, quick: bool, queries: Path | None = None, data: Path = SHARED_DATA) -> LabelledCatalog:
    """What the catalog suites run on: a given queries file over the full catalog, a slice, or the world."""
    if not (data / "catalog" / "civitai_loras.jsonl").is_file():
        return world_queries(folder)
    if queries is not None:
        return LabelledCatalog(data / "catalog" / "civitai_loras.jsonl", queries, "civitai", f"full catalog, {queries}")
    return real_slice(data, folder, n_queries=40 if quick else 200, n_distractors=300 if quick else 2000)
