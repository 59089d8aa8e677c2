"""Per-turn options a front end passes with a message; kept free of heavy imports (the CLI's search imports
the agent's service without torch)."""

from __future__ import annotations

from dataclasses import dataclass

# The largest seed: A1111's range (its clients send seeds up to 2^32 - 1), accepted by every API and drawn from
# by the agent, so a seed sent comes back as sent and every seed written into a PNG can be sent back.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SamplingOptions:
    """What a front end asks of one turn's sampling beyond the settings (an A1111 or OpenAI images request):
    run-scoped, so it never lands in a thread's checkpoint."""

    steps: int | None = None
    scheduler: str | None = None
    guidance_scale: float | None = None
    negative_prompt: str = ""  # added to the plan's own negative wishes
    output_size: tuple[int, int] | None = None  # (width, height) of the stored images; None: the model's own
