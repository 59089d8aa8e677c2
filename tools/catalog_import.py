"""`loracle catalog import`: read a source, upsert changed adapters, embed what changed, report counts."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from loracle.db import Database
from loracle.db.catalog import AdapterRecord, existing_hashes, upsert_adapters, vacuum_catalog
from loracle.tools.embed_sync import sync_embeddings
from loracle.tools.embedder import Embedder
from loracle.tools.importers import Parsed, Rejected, iter_source

BATCH = 500


@dataclass
class ImportReport:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    embedded: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"inserted {self.inserted}, updated {self.updated}, unchanged {self.unchanged}, "
            f"rejected {len(self.rejected)}; embedded {self.embedded} texts in {self.seconds:.1f} s"
        )


def _batches(items: Iterable[Parsed], size: int) -> Iterator[list[Parsed]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def import_records(
    db: Database, parsed: Iterable[Parsed], embedder: Embedder | None, *, progress: bool = False
) -> ImportReport:
    """Upsert valid records (skipping unchanged ones), collect rejections, then sync embeddings."""
    started = time.perf_counter()
    report = ImportReport()
    first_seen: dict[tuple[str, str], str] = {}
    touched: list[int] = []
    bar = tqdm(desc="importing", unit="record", disable=not progress)
    for batch in _batches(parsed, BATCH):
        records: list[AdapterRecord] = []
        for location, item in batch:
            if isinstance(item, Rejected):
                report.rejected.append(item)
                continue
            key = (item.source, item.external_id)
            if key in first_seen:
                report.rejected.append(Rejected(location, f"duplicate id {item.external_id} (first at {first_seen[key]})"))
                continue
            first_seen[key] = location
            records.append(item)
        with db.connection() as conn, conn.transaction():
            known: dict[tuple[str, str], tuple[int, str]] = {}
            for source in {r.source for r in records}:
                ids = [r.external_id for r in records if r.source == source]
                known.update({(source, ext): value for ext, value in existing_hashes(conn, source, ids).items()})
            changed = []
            for record in records:
                previous = known.get((record.source, record.external_id))
                if previous is None:
                    report.inserted += 1
                    changed.append(record)
                elif previous[1] != record.content_hash():
                    report.updated += 1
                    changed.append(record)
                else:
                    report.unchanged += 1
                    touched.append(previous[0])
            touched.extend(upsert_adapters(conn, changed).values())
        bar.update(len(batch))
    bar.close()
    if embedder is not None and touched:
        report.embedded = sync_embeddings(db, embedder, touched, progress=progress)
    if report.inserted or report.updated or report.embedded:
        with db.connection() as conn:
            vacuum_catalog(conn)
    report.seconds = time.perf_counter() - started
    return report


def import_catalog(db: Database, path: Path, embedder: Embedder | None, *, progress: bool = False) -> ImportReport:
    """Import every record of a catalog file or adapter folder (see tools/importers)."""
    return import_records(db, iter_source(path), embedder, progress=progress)
