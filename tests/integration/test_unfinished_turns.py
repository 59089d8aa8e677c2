"""A turn that did not finish leaves nothing in what follows: its message is not in the history, its plan is
not refined by the next turn, and its run is recorded with how it ended."""

from __future__ import annotations

import pytest

from loracle.agent.errors import Cancelled
from loracle.agent.runtime import build_context
from loracle.db.runs import get_run
from loracle.generation.loop import GenerationCancelled


def test_a_cancelled_turn_does_not_leak_into_the_next(world, db) -> None:
    settings, threads = world
    ctx = build_context(settings, db)
    first = threads.run_turn(ctx, "leak", "a watercolor painting of a red fox", seed=5)

    cancelling = build_context(settings, db)

    def stop_when_sampling(event: dict) -> None:  # planned and composed (checkpointed), then stopped
        if event["event"] == "mixes":
            cancelling.cancel.set()

    with pytest.raises((GenerationCancelled, Cancelled)):
        threads.run_turn(cancelling, "leak", "make it an oil painting of a misty forest", on_event=stop_when_sampling)
    assert threads.read("local", "leak").history == ["a watercolor painting of a red fox"]

    third = threads.run_turn(build_context(settings, db), "leak", "same picture but at night")
    assert third["history"] == ["a watercolor painting of a red fox", "same picture but at night"]
    assert "oil" not in third["plan"]["prompt"] and "misty" not in third["plan"]["prompt"]
    with db.connection() as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM runs WHERE thread_id = 'leak' ORDER BY created_at")]
        assert get_run(conn, first["run_id"])["status"] == "done"
    assert statuses == ["done", "cancelled", "done"]
