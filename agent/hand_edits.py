"""Adapter edits a person makes by hand (the studio's chips: pin, exclude, set a weight) as the agent's `Edits`,
so the next turn applies them exactly as it applies edits read from a follow-up message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from loracle.agent.errors import InvalidInput, agent_errors
from loracle.agent.plan import Edits

if TYPE_CHECKING:
    from loracle.agent.service import Agent


def hand_edits(agent: Agent, *, pin: Sequence[str] = (), exclude: Sequence[str] = (),
               weights: dict[str, float] | None = None) -> Edits | None:
    """The edits, each ref resolved in the catalog (InvalidInput naming an unknown one); None when there are none.

    A weight set by hand becomes the multiplier of the adapter's recommended weight (what selection starts
    from), so the next turn's pick carries exactly that weight."""
    from loracle.db.catalog import find_adapters
    from loracle.tools.compose import DEFAULT_WEIGHT

    weights = weights or {}
    both = sorted(set(pin) & set(exclude))
    if both:
        raise InvalidInput(f"{both[0]} is both pinned and excluded; choose one", field="exclude")
    refs = list(dict.fromkeys([*pin, *exclude, *weights]))
    if not refs:
        return None
    with agent_errors(), agent.db.connection() as conn:
        cards = find_adapters(conn, [ref.split(":", 1)[-1] for ref in refs])
    resolved: dict[str, dict] = {}
    for ref in refs:
        card = cards.get(ref.split(":", 1)[-1])
        if card is None:
            field = "pin" if ref in pin else "exclude" if ref in exclude else "weights"
            raise InvalidInput(f"{field}: no adapter {ref!r} in the catalog", field=field)
        resolved[ref] = card

    def canonical(ref: str) -> str:
        return f"{resolved[ref]['source']}:{resolved[ref]['external_id']}"

    scale = {canonical(ref): round(weight / (resolved[ref]["recommended_weight"] or DEFAULT_WEIGHT), 6)
             for ref, weight in weights.items()}
    return Edits(pinned=[canonical(r) for r in pin], excluded=[canonical(r) for r in exclude], weight_scale=scale)
