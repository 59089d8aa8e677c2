"""The LLM path: a fake chat model emitting tool calls, and the real ChatOpenAI against a local HTTP stub."""

from __future__ import annotations

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai import ChatOpenAI

from loracle.agent.runtime import build_context
from tests.integration.llm_stub import StubLLM

PROMPT = "a watercolor painting of a red fox in a misty forest"


class ScriptedChat(BaseChatModel):
    """Replies from a script: each item an AIMessage (with tool calls) or an exception to raise."""

    script: list
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        reply = self.script[self.calls]
        self.calls += 1
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=reply)])


def tool_call(name: str, args: dict, call_id: str = "c1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


def adapter_id(db, name: str) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT id FROM adapters WHERE name = %s", (name,)).fetchone()[0]


def test_one_llm_round_trip_selects_and_edits(world, db) -> None:
    settings, threads = world
    fox, oil = adapter_id(db, "Red Fox"), adapter_id(db, "Oil Painting")
    chat = ScriptedChat(script=[tool_call("SubmitSelection", {
        "tasks": [{"task": "red fox", "adapters": [{"id": fox, "reason": "the subject"}]},
                  {"task": "painting", "adapters": [{"id": oil, "reason": "style"}, {"id": 424242, "reason": "made up"}]}],
        "negative": "blurry",
    })])
    ctx = build_context(settings, db, llm=chat)
    state = threads.run_turn(ctx, "llm1", PROMPT, seed=1)
    assert chat.calls == 1 and state["llm_calls"] == 1
    assert {p["name"] for ps in state["picks"].values() for p in ps} == {"Red Fox", "Oil Painting"}
    assert "424242" in state["planner"] and state["planner"].startswith("llm:")
    assert state["plan"]["negative"] == "blurry"


def test_search_tool_is_called_only_for_a_new_task(world, db) -> None:
    settings, threads = world
    chat = ScriptedChat(script=[
        tool_call("SearchAdapters", {"task": "oil painting"}),
        tool_call("SubmitSelection", {"tasks": [{"task": "oil painting", "adapters": [{"id": adapter_id(db, "Oil Painting")}]}]}),
    ])
    state = threads.run_turn(build_context(settings, db, llm=chat), "llm2", "a fox", seed=1)
    assert chat.calls == 2 and "oil painting" in state["candidates"]
    assert [p["name"] for p in state["picks"]["oil painting"]] == ["Oil Painting"]


def test_llm_failure_degrades_to_offline_and_says_so(world, db) -> None:
    settings, threads = world
    chat = ScriptedChat(script=[TimeoutError("the model took too long")])
    state = threads.run_turn(build_context(settings, db, llm=chat), "llm3", PROMPT, seed=1)
    assert state["planner"].startswith("offline (the LLM failed: TimeoutError")
    assert {"Watercolor Wash", "Red Fox"} <= {p["name"] for ps in state["picks"].values() for p in ps}


@pytest.mark.parametrize(("mode", "planner"), [("select", "llm:stub-model"), ("malformed", "offline (the LLM failed"),
                                               ("text", "offline (the LLM failed"), ("slow", "offline (the LLM failed")])
def test_real_chatopenai_over_http(world, db, mode: str, planner: str) -> None:
    settings, threads = world
    with StubLLM() as stub:
        stub.mode = mode
        stub.extra_ids = [987654]
        chat = ChatOpenAI(model="stub-model", base_url=stub.base_url, api_key="test-key", timeout=1, max_retries=0)
        state = threads.run_turn(build_context(settings, db, llm=chat), f"http-{mode}", PROMPT, seed=3)
    assert state["planner"].startswith(planner), state["planner"]
    assert len(stub.requests) == 1, "exactly one LLM round trip"
    request = stub.requests[0]
    assert {t["function"]["name"] for t in request["tools"]} == {"SearchAdapters", "SubmitSelection"}
    assert "<catalog>" in request["messages"][1]["content"]
    if mode == "select":
        assert "987654" in state["planner"]  # the invented id was dropped and reported
        assert all(p["adapter_id"] != 987654 for ps in state["picks"].values() for p in ps)
    assert len(state["images"]) == 2
