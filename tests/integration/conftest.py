"""Fixtures the integration tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from loracle.agent.settings import Settings
from loracle.agent.threads import Threads
from loracle.tools.catalog_import import import_catalog
from tests.integration.tiny_catalog import write_tiny_catalog


@pytest.fixture
def world(tmp_path: Path, db, embedder):
    adapters, catalog = write_tiny_catalog(tmp_path)
    import_catalog(db, catalog, embedder)
    settings = Settings(home=tmp_path / "home", base_model="tiny", adapter_dirs=[adapters], steps=4, n_images=2,
                        skip_threshold=0.0)
    threads = Threads(db.url)
    yield settings, threads
    threads.close()
