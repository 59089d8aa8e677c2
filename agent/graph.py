"""The LangGraph state machine: plan -> retrieve -> select -> compose -> check_mix -> sample -> inspect,
with bounded retries, and `respond` at the end. `graph` is compiled without persistence; threads that
survive restarts compile it with the Postgres checkpointer (agent/threads.py)."""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from loracle.agent import nodes
from loracle.agent.state import AgentContext, AgentState, TurnInput


def build_graph(checkpointer: BaseCheckpointSaver | None = None):
    builder = StateGraph(AgentState, context_schema=AgentContext, input_schema=TurnInput)
    builder.add_node("plan", nodes.plan)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("select", nodes.select)
    builder.add_node("compose", nodes.compose)
    builder.add_node("check_mix", nodes.check_mix)
    builder.add_node("sample", nodes.sample)
    builder.add_node("inspect", nodes.inspect)
    builder.add_node("retry", nodes.retry)
    builder.add_node("respond", nodes.respond)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "retrieve")
    builder.add_edge("retrieve", "select")
    builder.add_edge("select", "compose")
    builder.add_edge("compose", "check_mix")
    builder.add_conditional_edges("check_mix", nodes.after_check, {"retry": "retry", "sample": "sample"})
    builder.add_edge("sample", "inspect")
    builder.add_conditional_edges("inspect", nodes.after_inspect, {"retry": "retry", "respond": "respond"})
    builder.add_edge("retry", "compose")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer)


graph = build_graph()
