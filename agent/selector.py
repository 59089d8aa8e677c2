"""The LLM composer: one tool-calling round trip that adjusts the tasks and selects adapters.

The model is bound to two tools: `SearchAdapters` (only when it adds a task with no candidates) and
`SubmitSelection` (the structured answer). Ids it invents are dropped and reported. Any failure
(timeout, refusal, malformed arguments) raises `LLMFailed`, and the graph falls back to the offline planner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field, ValidationError

from loracle.agent.plan import Candidate
from loracle.agent.prompts import SELECT_SYSTEM, candidate_block, select_user_message

MAX_ROUNDS = 3


class SearchAdapters(BaseModel):
    """Search the adapter catalog for a task that has no candidates yet."""

    task: str = Field(min_length=1, max_length=200, description="The new task, a short phrase.")


class ChosenAdapter(BaseModel):
    id: int = Field(description="A candidate id exactly as listed.")
    reason: str = Field(default="", max_length=300)


class TaskChoice(BaseModel):
    task: str = Field(min_length=1, max_length=200)
    adapters: list[ChosenAdapter] = Field(default_factory=list, max_length=3)


class SubmitSelection(BaseModel):
    """Submit the final tasks and the 0-3 adapters chosen for each (candidate ids only)."""

    tasks: list[TaskChoice] = Field(max_length=12)
    negative: str = Field(default="", max_length=500, description="What the user does not want.")
    pin: list[int] = Field(default_factory=list, description="Adapter ids the user asked to keep or use.")
    exclude: list[int] = Field(default_factory=list, description="Adapter ids the user asked to drop.")
    reweight: dict[str, float] = Field(default_factory=dict, description="Adapter id -> weight multiplier (0.2-2).")
    keep_seed: bool = Field(default=False, description="Keep the previous picture's seed (same composition).")


class LLMFailed(RuntimeError):
    """The LLM could not produce a usable selection; the message says why."""


@dataclass
class LLMSelection:
    answer: SubmitSelection
    calls: int
    dropped_ids: list[int] = field(default_factory=list)
    searched: dict[str, list[Candidate]] = field(default_factory=dict)


def select_with_llm(
    llm: BaseChatModel,
    prompt: str,
    tasks: list[str],
    candidates: dict[str, list[Candidate]],
    search: Callable[[str], list[Candidate]],
    *,
    history: list[str] = (),
    edits: dict | None = None,
) -> LLMSelection:
    """Ask the LLM to adjust tasks and pick adapters; validates ids against the candidates shown."""
    try:
        model = llm.bind_tools([SearchAdapters, SubmitSelection], tool_choice="any")
    except NotImplementedError as exc:
        raise LLMFailed("the chat model does not support tool calling") from exc
    messages = [
        SystemMessage(SELECT_SYSTEM),
        HumanMessage(select_user_message(prompt, tasks, candidates, list(history), edits or {})),
    ]
    shown = {c.adapter_id for items in candidates.values() for c in items}
    searched: dict[str, list[Candidate]] = {}
    for call_number in range(1, MAX_ROUNDS + 1):
        try:
            reply = model.invoke(messages)
        except Exception as exc:  # network errors, timeouts, refusals: all degrade the same way
            raise LLMFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            raise LLMFailed("the model answered without calling SubmitSelection")
        messages.append(reply)
        for call in reply.tool_calls:
            if call["name"] == "SubmitSelection":
                try:
                    answer = SubmitSelection.model_validate(call["args"])
                except ValidationError as exc:
                    raise LLMFailed(f"malformed SubmitSelection arguments: {exc.errors()[0]['msg']}") from exc
                return _drop_unknown(answer, shown, call_number, searched)
            if call["name"] == "SearchAdapters":
                try:
                    task = SearchAdapters.model_validate(call["args"]).task
                except ValidationError as exc:
                    raise LLMFailed("malformed SearchAdapters arguments") from exc
                found = search(task)
                searched[task] = found
                shown.update(c.adapter_id for c in found)
                messages.append(ToolMessage(candidate_block(task, found), tool_call_id=call["id"]))
            else:
                raise LLMFailed(f"the model called an unknown tool {call['name']!r}")
    raise LLMFailed(f"no SubmitSelection after {MAX_ROUNDS} calls")


def _drop_unknown(answer: SubmitSelection, shown: set[int], calls: int, searched: dict[str, list[Candidate]]) -> LLMSelection:
    dropped: list[int] = []
    for choice in answer.tasks:
        kept = [a for a in choice.adapters if a.id in shown]
        dropped.extend(a.id for a in choice.adapters if a.id not in shown)
        choice.adapters = kept
    return LLMSelection(answer, calls, dropped, searched)
