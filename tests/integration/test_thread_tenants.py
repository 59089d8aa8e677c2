"""Two tenants with the same thread id keep two conversations: the checkpoint key holds the tenant, so neither
reads, continues or deletes the other's history (real Postgres checkpointer, real compiled graph)."""

from __future__ import annotations

import pytest

from loracle.agent.threads import Threads


@pytest.fixture
def threads(database_url):
    store = Threads(database_url, max_size=2)
    yield store
    store.close()


def write(threads: Threads, tenant: str, thread_id: str, history: list[str]) -> None:
    """A checkpoint as a finished turn leaves it (the graph's own update path, without running the nodes)."""
    threads.graph.update_state(Threads.config(tenant, thread_id), {"history": history, "answer": history[-1]},
                               as_node="respond")


def test_same_thread_id_under_two_tenants(threads):
    write(threads, "alice", "t1", ["alice: a red fox"])
    assert threads.read("bob", "t1") is None, "bob sees alice's thread"
    assert threads.state("bob", "t1") == {}
    write(threads, "bob", "t1", ["bob: a blue whale"])
    assert threads.read("alice", "t1").history == ["alice: a red fox"]
    assert threads.read("bob", "t1").history == ["bob: a blue whale"]
    assert threads.state("alice", "t1")["answer"] == "alice: a red fox"
    threads.delete("bob", "t1")
    assert threads.read("bob", "t1") is None
    assert threads.read("alice", "t1").history == ["alice: a red fox"], "deleting bob's thread lost alice's"


def test_a_tenant_name_cannot_reach_another_thread(threads):
    """Swapping tenant and thread, or the same id as both, names another thread."""
    write(threads, "a", "b", ["a/b"])
    assert threads.read("a", "c") is None and threads.read("b", "b") is None and threads.read("a/b", "") is None
    keys = {Threads.config(t, i)["configurable"]["thread_id"] for t, i in (("a", "b"), ("b", "a"), ("a", "a"))}
    assert len(keys) == 3
