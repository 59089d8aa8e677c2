"""Which catalog base models fit an engine is one table: retrieval returns exactly the adapters inspection
accepts, for every engine family (SD 1.5 LCM and adapters without a base model used to pass one and not the other)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loracle.agent.catalog import search_catalog
from loracle.agent.runtime import resolve_base
from loracle.agent.service import Agent
from loracle.agent.settings import Settings
from loracle.tools.catalog_import import import_catalog
from loracle.tools.inspection import MixAdapter, check_mix

BASES = ["SD 1.5", "SD 1.4", "SD 1.5 LCM", "Other", "", None, "SDXL 1.0", "Pony", "Digits 1.0", "Digits MAR 1.0", "Flux.1 D"]


@pytest.fixture
def catalog(tmp_path: Path, db, embedder) -> dict[str, str | None]:
    """One watercolor adapter per base model; name -> base model."""
    names = {f"Watercolor for {({None: 'no base model', '': 'a blank base model'}).get(base, base)}": base for base in BASES}
    path = tmp_path / "catalog.jsonl"
    with path.open("w") as handle:
        for i, (name, base) in enumerate(names.items(), start=1):
            record = {"id": i, "name": name, "tags": ["style", "watercolor"], "description": "Soft watercolor washes."}
            if base is not None:
                record["base_model"] = base
            handle.write(json.dumps(record) + "\n")
    assert import_catalog(db, path, embedder).inserted == len(BASES)
    return names


@pytest.mark.parametrize("base_model", ["tiny", "tiny-sdxl", "world", "world-mar"])
def test_retrieval_returns_what_inspection_accepts(tmp_path: Path, db, embedder, catalog, base_model: str) -> None:
    settings = Settings(home=tmp_path / "home", base_model=base_model)
    setup, agent = resolve_base(settings), Agent(settings, db)
    assert agent.base_models == setup.base_models  # the front ends' filter is the graph's
    found = search_catalog(db, embedder, settings, ["watercolor"], k=50, base_models=agent.base_models, include_all=True)
    retrieved = {hit.name for hit in found["watercolor"]}
    accepted = {name for i, (name, base) in enumerate(catalog.items())
                if not check_mix([MixAdapter(i, name, 0.8, base)], setup.family)}
    assert retrieved == accepted
    assert accepted  # every family fits some of these adapters
    if setup.family == "sd15":
        assert {"Watercolor for SD 1.5 LCM", "Watercolor for no base model", "Watercolor for a blank base model"} <= retrieved
