"""Import and search against the real embedded PostgreSQL with pgvector and the real MiniLM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from loracle.db import DatabaseUnavailable, connect
from loracle.db.catalog import count_adapters
from loracle.db.migrate import apply_migrations, migration_files
from loracle.db.search import SearchFilters, _dense_statement, dense_search
from loracle.db.server import embedded_shared_buffers
from loracle.db.vectors import HNSW_EF_CONSTRUCTION, HNSW_M, ensure_hnsw_index, index_name
from loracle.tools.catalog_import import import_catalog
from loracle.tools.embed_sync import sync_embeddings
from loracle.tools.retrieve import retrieve, retrieve_for_tasks

ADAPTERS = [
    ("1", "Watercolor Painting Style", ["style", "watercolor", "painting"], ["watercolor"], "Soft watercolor washes on paper."),
    ("2", "Cyberpunk City", ["background", "city", "neon"], ["cyberpunk city"], "Neon-lit futuristic city streets at night."),
    ("3", "Pixel Art", ["style", "pixel art", "8bit"], ["pixel art"], "Retro 8-bit video game pixel art."),
    ("4", "Red Fox", ["animal", "fox"], ["red fox"], "Realistic red foxes in nature."),
    ("5", "Samurai Armor", ["clothing", "armor", "japan"], ["samurai armor"], "Traditional Japanese samurai armor."),
    ("6", "Anime Girl Character", ["character", "anime"], ["anigirl"], "A specific anime character."),
    ("7", "Misty Forest", ["background", "forest", "fog"], ["misty forest"], "Foggy, misty forest landscapes."),
    ("8", "Oil Painting", ["style", "oil painting"], ["oil painting"], "Thick impasto oil painting strokes."),
    ("9", "Blocked Watercolor", ["style", "watercolor"], ["watercolour"], "Watercolor, but on the blocklist."),
    ("10", "SDXL Watercolor", ["style", "watercolor"], ["watercolor xl"], "Watercolor for SDXL."),
]


def write_catalog(path: Path, rows=ADAPTERS, **overrides) -> Path:
    with path.open("w") as handle:
        for ext, name, tags, triggers, description in rows:
            line = {
                "id": int(ext),
                "name": name,
                "tags": tags,
                "trigger_words": triggers,
                "description": description,
                "base_model": "SDXL 1.0" if "SDXL" in name else "SD 1.5",
                "example_prompts": [f"a picture, {triggers[0]}"],
                "stylus_blacklisted": ext == "9",
            }
            line.update(overrides.get(ext, {}))
            handle.write(json.dumps(line) + "\n")
    return path


@pytest.fixture
def catalog(tmp_path: Path, db, embedder) -> Path:
    path = write_catalog(tmp_path / "catalog.jsonl")
    report = import_catalog(db, path, embedder)
    assert (report.inserted, report.updated, report.unchanged, len(report.rejected)) == (10, 0, 0, 0)
    assert report.embedded == 30  # head + full + the first example prompt per adapter
    return path


def test_migrations_are_idempotent(db) -> None:
    with db.connection() as conn:
        assert apply_migrations(conn) == []
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(version,) for version, _, _ in migration_files()]


def test_reimport_unchanged_writes_nothing_and_an_edit_reembeds_only_its_texts(tmp_path: Path, db, embedder, catalog) -> None:
    again = import_catalog(db, catalog, embedder)
    assert (again.inserted, again.updated, again.unchanged, again.embedded) == (0, 0, 10, 0)
    edited = write_catalog(tmp_path / "edited.jsonl", **{"4": {"description": "Arctic foxes in snow."}})
    report = import_catalog(db, edited, embedder)
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 9)
    assert report.embedded == 1  # only the fox's card text changed; its head and prompt did not


def test_bad_lines_do_not_lose_imported_data(tmp_path: Path, db, embedder, catalog) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 11, "name": "New One", "tags": ["x"]}\n{broken\n{"id": 1, "name": 5}\n{"id": 11, "name": "Dup"}\n')
    report = import_catalog(db, bad, embedder)
    assert report.inserted == 1
    reasons = {r.location: r.reason for r in report.rejected}
    assert "malformed JSON" in reasons["bad.jsonl:2"]
    assert "name" in reasons["bad.jsonl:3"]
    assert "duplicate id 11" in reasons["bad.jsonl:4"]
    with db.connection() as conn:
        assert count_adapters(conn) == 11
        assert conn.execute("SELECT name FROM adapters WHERE external_id = '1'").fetchone()[0] == "Watercolor Painting Style"


@pytest.mark.parametrize("strategy", ["dense", "head", "lexical", "fused", "rerank"])
def test_every_strategy_finds_the_obvious_adapter(db, embedder, catalog, strategy: str) -> None:
    with db.connection() as conn:
        hits = retrieve(conn, embedder, "a red fox in a misty forest", strategy=strategy, k=3)
    names = [h.name for h in hits]
    assert {"Red Fox", "Misty Forest"} & set(names[:2]), names


def test_filters_exclude_tags_blocklist_and_base_model(db, embedder, catalog) -> None:
    filters = SearchFilters(base_models=["SD 1.5"], exclude_tags=["Character"], exclude_blocklisted=True)
    with db.connection() as conn:
        hits = retrieve(conn, embedder, "watercolor anime girl", strategy="fused", k=10, filters=filters)
        unfiltered = retrieve(conn, embedder, "watercolor anime girl", strategy="fused", k=10)
    names = {h.name for h in hits}
    assert not names & {"Anime Girl Character", "Blocked Watercolor", "SDXL Watercolor"}
    assert "Watercolor Painting Style" in names
    assert {"Anime Girl Character", "Blocked Watercolor", "SDXL Watercolor"} <= {h.name for h in unfiltered}


def test_hits_explain_why_they_matched(db, embedder, catalog) -> None:
    with db.connection() as conn:
        [hit] = retrieve(conn, embedder, "pixel art of a castle", strategy="rerank", k=1)
    assert hit.name == "Pixel Art"
    assert "pixel art" in hit.evidence["matched_terms"]
    assert set(hit.evidence["features"]) >= {"head", "full", "prompt", "fused"}
    assert "head #" in hit.explain()


@pytest.mark.parametrize("query", ["100% 'quoted' _under_ ; DROP TABLE adapters; --", "%", "_", "\\", "the of a"])
def test_hostile_queries_are_just_text(db, embedder, catalog, query: str) -> None:
    with db.connection() as conn:
        for strategy in ("lexical", "fused"):
            retrieve(conn, embedder, query, strategy=strategy, k=5)
        assert count_adapters(conn) == 10


def test_empty_query_is_refused(db, embedder, catalog) -> None:
    with db.connection() as conn, pytest.raises(ValueError, match="empty"):
        retrieve(conn, embedder, "   ")


def test_retrieval_per_task(db, embedder, catalog) -> None:
    with db.connection() as conn:
        per_task = retrieve_for_tasks(conn, embedder, ["samurai armor", "pixel art", "samurai armor", ""], k=1)
    assert list(per_task) == ["samurai armor", "pixel art"]
    assert per_task["samurai armor"][0].name == "Samurai Armor"
    assert per_task["pixel art"][0].name == "Pixel Art"


def test_hnsw_matches_exact_search(db, embedder, catalog) -> None:
    query = embedder.encode(["a painting"])[0]
    with db.connection() as conn:
        approx = dense_search(conn, embedder.name, "full", query, 5, SearchFilters())
        exact = dense_search(conn, embedder.name, "full", query, 5, SearchFilters(), exact=True)
        with conn.transaction():
            # the table is tiny (and analysed after the import): check that the index is usable at all
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.execute(f"SET LOCAL {setting} = off")
            explain = conn.execute(
                "EXPLAIN SELECT 1 FROM adapter_embeddings e WHERE model = 'all-MiniLM-L6-v2' AND kind = 'full' "
                "ORDER BY e.embedding::halfvec(384) <=> %s::halfvec(384) LIMIT 5",
                (str(query.tolist()),),
            ).fetchall()
    plan = "\n".join(row[0] for row in explain)
    assert [a for a, _ in approx] == [a for a, _ in exact]
    assert "emb_hnsw_all_minilm_l6_v2_full" in plan, plan


def test_one_search_over_two_kinds_keeps_each_adapters_better_vector(db, embedder, catalog) -> None:
    with db.connection() as conn:
        conn.execute("UPDATE adapters SET refined_description = 'Misty watercolor painting of foxes in a forest.' "
                     "WHERE external_id IN ('4', '7', '8')")
    assert sync_embeddings(db, embedder) == 3  # only the new refined texts
    query = embedder.encode(["a watercolor painting of a fox"])[0]
    with db.connection() as conn:
        best: dict[int, float] = {}
        for kind in ("full", "refined"):
            for adapter_id, score in dense_search(conn, embedder.name, kind, query, 10, SearchFilters(), exact=True):
                best[adapter_id] = max(score, best.get(adapter_id, score))
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:6]
        both = dense_search(conn, embedder.name, "full+refined", query, 6, SearchFilters(), per_adapter_rows=2)
        with conn.transaction():
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.execute(f"SET LOCAL {setting} = off")
            statement, params = _dense_statement(embedder.name, "full+refined", query, 6, SearchFilters(), 2)
            plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall())
    assert [a for a, _ in both] == [a for a, _ in expected]
    np.testing.assert_allclose([s for _, s in both], [s for _, s in expected], atol=1e-3)
    assert index_name(embedder.name, "full+refined") in plan, plan


def test_an_index_built_with_other_parameters_is_rebuilt(db, embedder, catalog) -> None:
    name = index_name(embedder.name, "head")
    options = lambda conn: sorted(conn.execute("SELECT reloptions FROM pg_class WHERE relname = %s", (name,)).fetchone()[0])  # noqa: E731
    with db.connection() as conn:
        assert options(conn) == sorted([f"m={HNSW_M}", f"ef_construction={HNSW_EF_CONSTRUCTION}"])
        conn.execute(f"DROP INDEX {name}")
        conn.execute(f"CREATE INDEX {name} ON adapter_embeddings USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) "
                     "WITH (m = 8) WHERE model = 'all-MiniLM-L6-v2' AND kind = 'head'")
        assert options(conn) == ["m=8"]
        ensure_hnsw_index(conn, embedder.name, "head", 384)
        assert options(conn) == sorted([f"m={HNSW_M}", f"ef_construction={HNSW_EF_CONSTRUCTION}"])


def test_the_embedded_server_keeps_a_buffer_cache_for_big_catalogs(server_url: str) -> None:
    if os.environ.get("LORACLE_TEST_DATABASE_URL"):
        pytest.skip("an external test database is configured as its owner chose; only the embedded one is tuned")
    with psycopg.connect(server_url) as conn:
        stored = conn.execute("SELECT setting FROM pg_file_settings WHERE name = 'shared_buffers' "
                              "AND sourcefile LIKE '%postgresql.auto.conf'").fetchone()
    assert stored == (embedded_shared_buffers(),)
    assert 128 <= int(stored[0].removesuffix("MB")) <= 2048


def test_unreachable_database_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database") as info:
        connect("postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=1", tmp_path)
    assert "password" not in str(info.value)


def test_bm25_term_statistics_follow_edits_and_deletes(tmp_path: Path, db, embedder, catalog) -> None:
    """The trigger-kept postings and lexical_stats match the catalog after an update and a delete."""
    from loracle.db.search import lexical_search

    def stats(conn):
        expected = conn.execute(
            "SELECT count(*), coalesce(sum(loracle_tsvector_len(search_text)), 0) FROM adapters"
        ).fetchone()
        kept = conn.execute("SELECT docs, total_len FROM lexical_stats").fetchone()
        return tuple(float(x) for x in expected), tuple(float(x) for x in kept)

    edited = write_catalog(tmp_path / "edited.jsonl", **{"4": {"description": "Arctic foxes in snow."}})
    import_catalog(db, edited, embedder)
    with db.connection() as conn:
        expected, kept = stats(conn)
        assert expected == kept
        assert [i for i, _ in lexical_search(conn, "arctic", 5, SearchFilters())]  # the new word is searchable
        conn.execute("DELETE FROM adapters WHERE external_id = '4'")
        expected, kept = stats(conn)
        assert expected == kept and kept[0] == 9
        assert lexical_search(conn, "arctic", 5, SearchFilters()) == []
        assert conn.execute("SELECT count(*) FROM adapter_terms WHERE term = 'arctic'").fetchone()[0] == 0


def test_bm25_rare_word_outweighs_common_word(db, embedder, catalog) -> None:
    """IDF: 'impasto' (one adapter) beats 'style' (four) in the lexical list, unlike plain ts_rank_cd."""
    from loracle.db.search import lexical_search

    with db.connection() as conn:
        ranked = lexical_search(conn, "style impasto", 10, SearchFilters())
        top = conn.execute("SELECT external_id FROM adapters WHERE id = %s", (ranked[0][0],)).fetchone()[0]
    assert top == "8"
