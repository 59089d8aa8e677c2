"""The `loracle` console script end to end, as a user runs it (a subprocess against a real database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_catalog_db import write_catalog


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_import_then_search_as_json(tmp_path: Path, database_url: str) -> None:
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home")}
    catalog = write_catalog(tmp_path / "catalog.jsonl")
    with catalog.open("a") as handle:
        handle.write("{oops\n")
    imported = run(["catalog", "import", str(catalog)], env)
    assert imported.returncode == 0, imported.stderr
    assert "inserted 10, updated 0, unchanged 0, rejected 1" in imported.stdout
    assert "rejected catalog.jsonl:11: malformed JSON" in imported.stderr
    searched = run(["search", "neon cyberpunk streets", "--k", "3", "--json"], env)
    assert searched.returncode == 0, searched.stderr
    hits = json.loads(searched.stdout)
    assert hits[0]["name"] == "Cyberpunk City" and len(hits) == 3
    assert hits[0]["evidence"]["ranks"]


def test_database_down_is_one_clear_line(tmp_path: Path) -> None:
    env = {"LORACLE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1", "LORACLE_HOME": str(tmp_path)}
    result = run(["search", "anything"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the database")
    assert "Traceback" not in result.stderr


def test_bad_arguments_are_reported(tmp_path: Path, database_url: str) -> None:
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path)}
    assert "no such file" in run(["catalog", "import", str(tmp_path / "missing.jsonl")], env).stderr
    empty = run(["search", "  "], env)
    assert empty.returncode == 1 and "the prompt is empty" in empty.stderr
