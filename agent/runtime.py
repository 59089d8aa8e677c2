"""Wiring: settings -> the run context the graph needs (database, embedder, engine, judge, LLM).

The built-in "world" base model is the digits world bundled under generation/world/artifacts: a trained
pixel-space model, a weaker guide for autoguidance, style LoRAs, their catalog, known conflicts and a
judge that inspection uses as its prompt-fit check.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from loracle.agent.folders import linked_folders
from loracle.agent.llm import make_chat_model
from loracle.agent.sampler_settings import GUIDE
from loracle.agent.settings import Settings
from loracle.agent.state import AgentContext, SubjectDomain
from loracle.db import Database
from loracle.generation.engine import ImageEngine
from loracle.generation.world import world_paths
from loracle.generation.world.paths import WorldPaths
from loracle.tools.compatibility import catalog_bases, engine_family
from loracle.tools.embedder import get_embedder
from loracle.tools.image_store import open_image_store
from loracle.tools.inspection import Judge
from loracle.tools.judges import asks_for_digits, without_digits, world_judge

WORLD_NAMESPACE = "digits-world"
DIGITS = SubjectDomain("digits", asks_for_digits, without_digits)


@dataclass
class BaseSetup:
    """Everything that depends on which base model the engine runs."""

    spec: str
    guide: str | None
    adapter_dirs: list[Path]
    family: str
    base_models: list[str] | None
    guidance_scale: float
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    catalog: Path | None = None
    judge_factory: Callable[[], Judge] | None = None
    domain: SubjectDomain | None = None  # what the base model can draw, when it is that narrow


def resolve_base(settings: Settings) -> BaseSetup:
    dirs = [settings.adapters_dir, *settings.adapter_dirs, *linked_folders(settings.home).loras]
    if settings.base_model == "world":
        paths = world_paths()
        conflicts = []
        if paths.conflicts.exists():
            for item in json.loads(paths.conflicts.read_text())["conflicts"]:
                a, b = (f"{WORLD_NAMESPACE}:{i}" for i in item["ids"])
                conflicts.append((a, b, item["reason"]))
        return BaseSetup(
            spec=str(paths.base), guide=str(paths.guide) if paths.guide.exists() else None,
            adapter_dirs=[paths.loras, *dirs], family="digits", base_models=catalog_bases("digits"), guidance_scale=1.5,
            conflicts=conflicts, catalog=paths.catalog, judge_factory=lambda: _judge(paths, settings), domain=DIGITS,
        )
    if settings.base_model == "world-mar":
        return _world_mar(dirs, settings)
    family = engine_family(settings.base_model)
    return BaseSetup(spec=settings.base_model, guide=settings.guide_model, adapter_dirs=dirs, family=family,
                     base_models=catalog_bases(family), guidance_scale=7.5)


def _judge(paths: WorldPaths, settings: Settings) -> Judge:
    return world_judge(paths.judge, settings.inspection_margin, settings.inspection_digit_confidence)


def _world_mar(dirs: list[Path], settings: Settings) -> BaseSetup:
    """The digits world's second generator family: its MAR (same prompts, judge and styles; its own LoRAs)."""
    paths = world_paths()
    if not (paths.mar / "loracle_model.json").is_file():
        raise ValueError(f"base model 'world-mar': no MAR in {paths.mar}; build it with `loracle world train --only mar`")
    sampling = json.loads((paths.mar / "loracle_model.json").read_text()).get("sampling", {})
    return BaseSetup(
        spec=str(paths.mar), guide=None, adapter_dirs=[paths.mar_loras, *dirs], family="digits-mar",
        base_models=catalog_bases("digits-mar"), guidance_scale=float(sampling.get("cfg", 2.0)), catalog=paths.mar_catalog,
        judge_factory=lambda: _judge(paths, settings), domain=DIGITS,
    )


_ENGINES: dict[tuple, ImageEngine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(setup: BaseSetup) -> ImageEngine:
    """One engine per base model per process (loading weights is the slow part): the MAR engine for the
    world's MAR, else the diffusion engine, with the setup's guide model registered for autoguidance."""
    key = (setup.spec, setup.guide, tuple(map(str, setup.adapter_dirs)))
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _load_engine(setup)
        return _ENGINES[key]


def _load_engine(setup: BaseSetup) -> ImageEngine:
    if setup.family == "digits-mar":
        from loracle.generation.mar.engine import MAREngine
        from loracle.generation.mar.io import load_mar

        return MAREngine(load_mar(setup.spec), setup.adapter_dirs)
    from loracle.generation.base_models import load_base_model
    from loracle.generation.engine import Engine

    guides = {GUIDE: load_base_model(setup.guide)} if setup.guide else {}
    return Engine(load_base_model(setup.spec), setup.adapter_dirs, guide_models=guides)


def engine_factory(settings: Settings, setup: BaseSetup) -> Callable[[], ImageEngine]:
    """The local engine, or Sampler replicas on Ray when `settings.sampler_app` names their application."""
    if settings.sampler_app:
        from loracle.agent.placement import remote_engine

        return functools.partial(remote_engine, settings.sampler_app)
    return functools.partial(engine_for, setup)


def build_context(settings: Settings, db: Database, *, tenant: str = "local", llm: BaseChatModel | None = None) -> AgentContext:
    """The run context for `settings`. The chat model is the one `settings.llm_model` names (none: the
    offline planner); `llm` replaces it with a given model (a test's stub)."""
    setup = resolve_base(settings)
    return AgentContext(
        db=db,
        embedder=get_embedder(settings.embedding_model),
        engine_factory=engine_factory(settings, setup),
        images=open_image_store(settings.image_store, settings.images_dir, db),
        adapter_dirs=setup.adapter_dirs,
        settings=settings,
        llm=llm if llm is not None else make_chat_model(settings),
        judge=setup.judge_factory() if setup.judge_factory else None,
        family=setup.family,
        guidance_scale=setup.guidance_scale,
        base_models=setup.base_models,
        tenant=tenant,
        static_conflicts=setup.conflicts,
        domain=setup.domain,
    )
