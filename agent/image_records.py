"""Each image a turn made: its `images` row (next to its stored file) and its record in the state."""

from __future__ import annotations

import psycopg

from loracle.agent.errors import Cancelled
from loracle.agent.state import AgentContext, GeneratedImage
from loracle.db.runs import add_image
from loracle.tools.sample import StoredImage


def record_images(ctx: AgentContext, run_id: str, attempt: int, stored: list[StoredImage],
                  mix_adapters: list[list[int]], triggers: list[list[str]], adapter_guidance: float) -> list[GeneratedImage]:
    """An `images` row per staged file, all in one transaction (with the bytes, for a store that keeps them in
    the database), then each file under its final name: a file without a row, or a row without a file, is never
    left behind (tools/image_store.py sweeps what a crash interrupts). A run whose thread was deleted meanwhile
    has no row to attach images to: Cancelled."""
    files = [image.file for image in stored]
    images = []
    try:
        with ctx.db.connection() as conn, conn.transaction():
            for image, adapters, words in zip(stored, mix_adapters, triggers):
                record = {"attempt": attempt, "path": image.file.path, "sha256": image.file.sha256, "seed": image.seed,
                          "mix": image.mix, "nfe": image.nfe, "parameters": image.parameters}
                image_id = add_image(conn, run_id, record, tenant=ctx.tenant)
                images.append(GeneratedImage(**record, id=str(image_id), adapters=adapters, prompt=image.prompt,
                                              triggers=list(words), adapter_guidance=adapter_guidance))
            ctx.images.write(conn, files)
    except psycopg.errors.ForeignKeyViolation:
        ctx.images.discard(files)
        raise Cancelled("the thread was deleted while the run was sampling") from None
    except BaseException:
        ctx.images.discard(files)
        raise
    ctx.images.publish(files)
    return images
