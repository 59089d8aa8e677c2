"""The graph's typed state: what the checkpointer revives (the state's models, nothing else), threads written
before the state was typed, and the JSON shapes the run record and the API keep."""

from __future__ import annotations

from pydantic import BaseModel

from loracle.agent.plan import Candidate, Pick, Plan, PlanTask
from loracle.agent.state import AgentState, Attempt, GeneratedImage, state_models
from loracle.agent.threads import checkpoint_serializer
from loracle.tools.inspection import Finding

# The keys a pick had as a plain dict before the state was typed: the run record and the API show these.
PICK_KEYS = ["adapter_id", "ref", "name", "tags", "trigger_words", "base_model", "weight", "score", "category",
             "description", "file", "reason"]


class Foreign(BaseModel):
    """A model the state never holds: a checkpoint naming it must not get it constructed."""

    command: str


def _pick() -> Pick:
    return Pick(adapter_id=7, ref="civitai:7", name="Red Fox", tags=["animal"], score=0.91, reason="score 0.91")


def test_state_models_are_every_model_the_state_holds():
    assert {Plan, PlanTask, Candidate, Pick, Finding, Attempt, GeneratedImage} <= state_models()
    assert AgentState not in state_models() and Foreign not in state_models()


def test_the_checkpoint_serializer_revives_state_models_and_no_other_class():
    serde = checkpoint_serializer()
    plan = Plan(prompt="a red fox", tasks=[PlanTask(phrase="red fox")])
    attempt = Attempt(attempt=0, mixes=[{"a.safetensors": 0.8}], images=["ab/cd.png"],
                      findings=[Finding(check="images", message="image 0: black", blamed=[7])])
    for value in (plan, _pick(), attempt):
        revived = serde.loads_typed(serde.dumps_typed(value))
        assert type(revived) is type(value) and revived == value
    assert serde.loads_typed(serde.dumps_typed(Foreign(command="rm -rf /"))) == {"command": "rm -rf /"}


def test_a_thread_checkpointed_untyped_reads_back_typed():
    """Threads written before the state was typed hold dicts; the state validates them into the models."""
    state = AgentState(
        plan={"prompt": "a red fox", "tasks": [{"phrase": "red fox", "kind": "concept"}], "edits": {"excluded_terms": ["blur"]}},
        picks={"red fox": [_pick().model_dump()]},
        findings=[{"check": "images", "message": "image 0: black", "blamed": [7], "action": "drop"}],
    )
    assert isinstance(state.plan, Plan) and state.plan.edits.excluded_terms == ["blur"]
    assert state.picks["red fox"][0] == _pick() and isinstance(state.findings[0], Finding)


def test_picks_keep_their_json_shape():
    assert list(_pick().model_dump(mode="json")) == PICK_KEYS
    assert list(Candidate(**_pick().model_dump(exclude={"reason"})).model_dump()) == PICK_KEYS[:-1]
