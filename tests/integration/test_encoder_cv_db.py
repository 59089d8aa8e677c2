"""The fine-tuned encoder's cross-validation (evals/encoder_cv.py) against the real database, on the tiny catalog."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_catalog_db import catalog  # noqa: F401  (fixture)
from tests.integration.test_learned_lists_db import _rows


def test_each_variant_is_fused_beside_todays_first_stage(db, embedder, catalog, tmp_path: Path) -> None:  # noqa: F811
    from loracle.evals.encoder_cv import FUSIONS, EncoderSettings, cross_validate

    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(40)))
    variants = [EncoderSettings(epochs=1, batch=8), EncoderSettings(both_sides=True, epochs=1, batch=8)]
    table = cross_validate(db, embedder, [path], variants, exclude_tags=["character"], ef_search=800, folds=1, log=lambda *_: None)
    rows = {(variant, name): row for (variant, name, _), row in table.items()}  # one label source: civitai
    without = {name for name, (left_out, _) in FUSIONS.items() if "tuned" in left_out}
    assert set(rows) == {("-", n) for n in without} | {(v, n) for v in ("query", "both") for n in set(FUSIONS) - without}
    assert all(0.0 <= row["R@10"] <= row["R@300"] <= 1.0 for row in rows.values())
    # every prompt's pick is in the tiny catalog, which the tuned list reads whole
    assert rows[("query", "tuned alone")]["R@300"] == rows[("both", "tuned alone")]["R@300"] == 1.0
