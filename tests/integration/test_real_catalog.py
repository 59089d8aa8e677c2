"""The real Civitai catalog of ../shared/data (skipped where it is absent): import a slice and search it."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from loracle.db.catalog import count_adapters
from loracle.tools.catalog_import import import_catalog
from loracle.tools.retrieve import SearchFilters, retrieve


def test_real_records_import_and_are_found(shared_data: Path, tmp_path: Path, db, embedder) -> None:
    with (shared_data / "catalog" / "civitai_loras.jsonl").open() as source:
        lines = list(islice(source, 150))
    names = {json.loads(line)["id"]: json.loads(line)["name"] for line in lines}
    sample = tmp_path / "slice.jsonl"
    sample.write_text("".join(lines))
    report = import_catalog(db, sample, embedder)
    assert (report.inserted, len(report.rejected)) == (150, 0)
    with db.connection() as conn:
        assert count_adapters(conn) == 150
        hits = retrieve(conn, embedder, "vhs footage of a street, 1990s", strategy="fused", k=5,
                        filters=SearchFilters(exclude_tags=["character", "celebrity"], exclude_blocklisted=True))
    assert names[3679] == "Bad VHS" and hits[0].name == "Bad VHS"
    again = import_catalog(db, sample, embedder)
    assert (again.unchanged, again.embedded) == (150, 0)
