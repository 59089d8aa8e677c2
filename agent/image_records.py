"""Each image a turn made: its `images` row (next to its stored file) and its record in the state."""

from __future__ import annotations

from loracle.agent.state import AgentContext, GeneratedImage
from loracle.db.runs import add_image
from loracle.tools.sample import StoredImage


def record_images(ctx: AgentContext, run_id: str, attempt: int, stored: list[StoredImage],
                  mix_adapters: list[list[int]]) -> list[GeneratedImage]:
    """An `images` row per stored file, and the state's record of each image."""
    images = []
    with ctx.db.connection() as conn:
        for image, adapters in zip(stored, mix_adapters):
            record = {"attempt": attempt, "path": image.path, "sha256": image.sha256, "seed": image.seed,
                      "mix": image.mix, "nfe": image.nfe, "parameters": image.parameters}
            image_id = add_image(conn, run_id, record, tenant=ctx.tenant)
            images.append(GeneratedImage(**record, id=str(image_id), adapters=adapters, prompt=image.prompt))
    return images
