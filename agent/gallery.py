"""What a person browsing their work sees: their threads, most recent first, and each image explained (the
run that made it, and every adapter in its mix with its weight, the task it served, why it was picked, its
trigger words and its catalog page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loracle.agent.errors import NotFound, agent_errors

if TYPE_CHECKING:
    from loracle.agent.service import Agent

# Catalog sources whose adapters have a public page, by source name.
ADAPTER_PAGES = {"civitai": "https://civitai.com/models/{id}"}


def adapter_page(ref: str) -> str | None:
    """The public page of the adapter `source:external_id`, when its source has pages."""
    source, _, external_id = ref.partition(":")
    page = ADAPTER_PAGES.get(source)
    return page.format(id=external_id) if page and external_id else None


def list_threads(agent: Agent, tenant: str, *, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
    """The tenant's threads, most recently active first: id, created_at, updated_at, title (the first
    prompt), turns, images and cover (the newest image's id)."""
    from loracle.db.tenancy import list_threads as listed

    with agent_errors(), agent.db.connection() as conn:
        return listed(conn, tenant, limit, offset)


@dataclass(frozen=True)
class ImageAdapter:
    """One adapter of an image's mix, as the image used it."""

    name: str
    weight: float
    ref: str | None = None
    task: str | None = None
    reason: str | None = None
    trigger_words: tuple[str, ...] = ()
    page: str | None = None


@dataclass(frozen=True)
class ImageDetails:
    """An image and how it was made."""

    id: str
    run_id: str
    thread_id: str
    prompt: str
    seed: int
    turn_seed: int  # the seed a turn asks for to draw this image's batch again
    nfe: int
    attempt: int
    sha256: str
    parameters: str
    created_at: datetime
    adapters: list[ImageAdapter]
    edit: dict[str, Any] | None  # mode, strength and source of the turn's input image, if it edited one


def image_adapters(mix: dict[str, float], picks: dict[str, list[dict[str, Any]]]) -> list[ImageAdapter]:
    """The mix (adapter file -> weight) matched to the run's picks by file; an adapter no pick names keeps its file's name."""
    by_file = {pick["file"]: (task, pick) for task, items in picks.items() for pick in items if pick.get("file")}
    adapters = []
    for file, weight in sorted(mix.items()):
        task, pick = by_file.get(file, (None, None))
        if pick is None:
            adapters.append(ImageAdapter(name=Path(file).stem, weight=weight))
            continue
        adapters.append(ImageAdapter(name=pick["name"], weight=weight, ref=pick["ref"], task=task, reason=pick.get("reason"),
                                     trigger_words=tuple(pick.get("trigger_words") or ()), page=adapter_page(pick["ref"])))
    return adapters


def image_details(agent: Agent, tenant: str, image_id: str) -> ImageDetails:
    """The tenant's image explained; NotFound for another tenant's, an unknown or a malformed id."""
    from loracle.db.tenancy import get_image_record

    with agent_errors(), agent.db.connection() as conn:
        row = get_image_record(conn, tenant, image_id)
    if row is None:
        raise NotFound(f"no image {image_id!r}")
    edit = (row["plan"] or {}).get("edit")
    return ImageDetails(
        id=str(row["id"]), run_id=str(row["run_id"]), thread_id=row["thread_id"], prompt=row["prompt"], seed=row["seed"],
        turn_seed=row["turn_seed"], nfe=row["nfe"], attempt=row["attempt"], sha256=row["sha256"], parameters=row["parameters"],
        created_at=row["created_at"], adapters=image_adapters(row["mix"] or {}, row["picks"] or {}),
        edit=None if edit is None else {"mode": "inpaint" if edit.get("mask") else "img2img", "strength": edit.get("strength"),
                                        "source": edit.get("source"), "image_id": edit.get("image_id")},
    )
