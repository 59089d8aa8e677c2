"""Ownership in the database: two tenants with the same thread id see, list and delete only their own runs and
images, and a shared image file survives until no row uses it."""

from __future__ import annotations

import uuid

from loracle.db import tenancy
from loracle.db.runs import add_image, finish_run, queue_run
from loracle.db.tenancy import delete_thread, ensure_thread, get_image, get_run_for, get_thread, thread_runs, thread_tenants


def done_run(conn, thread_id: str, prompt: str, *, tenant: str) -> uuid.UUID:
    """A finished run: a thread's listing shows only finished runs' images."""
    run_id = queue_run(conn, thread_id, prompt, tenant=tenant)
    finish_run(conn, run_id, status="done")
    return run_id


def image(path: str) -> dict:
    return {"attempt": 0, "path": path, "sha256": path * 2, "seed": 1, "mix": {"a": 0.5}, "nfe": 10, "parameters": "p"}


def test_two_tenants_one_thread_id(db):
    with db.connection() as conn:
        assert ensure_thread(conn, "alice", "t1") is True
        assert ensure_thread(conn, "alice", "t1") is False, "created twice"
        assert get_thread(conn, "bob", "t1") is None
        assert ensure_thread(conn, "bob", "t1") is True
        assert get_thread(conn, "alice", "t1")["id"] == "t1"
        run_a = done_run(conn, "t1", "a fox", tenant="alice")
        run_b = done_run(conn, "t1", "a whale", tenant="bob")
        done_run(conn, "t2", "cli only", tenant="carol")
        image_a = add_image(conn, run_a, image("aa.png"), tenant="alice")
        add_image(conn, run_b, image("bb.png"), tenant="bob")
        add_image(conn, run_b, image("shared.png"), tenant="bob")
        newest_a = add_image(conn, run_a, image("shared.png"), tenant="alice")
        assert thread_tenants(conn, "t1") == ["alice", "bob"]
        assert thread_tenants(conn, "t2") == ["carol"], "a thread run from the command line has its tenant too"
        runs = thread_runs(conn, "alice", "t1")
        assert [r["prompt"] for r in runs] == ["a fox"]
        assert sorted(i["path"] for i in runs[0]["images"]) == ["aa.png", "shared.png"]
        assert get_run_for(conn, "alice", str(run_a))["prompt"] == "a fox"
        assert get_run_for(conn, "bob", str(run_a)) is None
        assert get_run_for(conn, "alice", "not-a-uuid") is None
        assert len(get_run_for(conn, "alice", str(run_a))["images"]) == 2
        assert get_image(conn, str(image_a))["tenant"] == "alice"
        assert get_image(conn, str(uuid.uuid4())) is None and get_image(conn, "../x") is None

        ensure_thread(conn, "alice", "t3")
        run_a3 = done_run(conn, "t3", "a heron", tenant="alice")
        add_image(conn, run_a3, image("cc.png"), tenant="alice")
        assert get_thread(conn, "alice", "nope") is None
        assert [r["prompt"] for r in thread_runs(conn, "alice", "t1")] == ["a fox"], "another thread's runs"

        listed = tenancy.list_threads(conn, "alice", 10)
        assert [(t["id"], t["title"], t["turns"], t["images"]) for t in listed] == [("t3", "a heron", 1, 1),
                                                                                  ("t1", "a fox", 1, 2)]
        assert listed[1]["cover"] == newest_a, "the newest image of the thread"
        assert [t["id"] for t in tenancy.list_threads(conn, "alice", 1, offset=1)] == ["t1"]
        assert [t["id"] for t in tenancy.list_threads(conn, "bob", 10)] == ["t1"]
        record = tenancy.get_image_record(conn, "alice", str(image_a))
        assert (record["thread_id"], record["prompt"], record["path"]) == ("t1", "a fox", "aa.png")
        assert tenancy.get_image_record(conn, "bob", str(image_a)) is None, "bob reads alice's image"
        assert tenancy.get_image_record(conn, "alice", "not-a-uuid") is None

        assert delete_thread(conn, "alice", "t1") == ["aa.png"], "bob's row still uses shared.png"
        assert get_thread(conn, "alice", "t1") is None and thread_runs(conn, "alice", "t1") == []
        assert get_thread(conn, "bob", "t1") is not None, "deleting alice's t1 deleted bob's"
        assert get_thread(conn, "alice", "t3") is not None, "deleting t1 deleted alice's other thread"
        assert [(r["prompt"], [i["path"] for i in r["images"]]) for r in thread_runs(conn, "alice", "t3")] == \
            [("a heron", ["cc.png"])]
        assert [r["prompt"] for r in thread_runs(conn, "bob", "t1")] == ["a whale"]
        assert sorted(i["path"] for i in thread_runs(conn, "bob", "t1")[0]["images"]) == ["bb.png", "shared.png"]
        assert delete_thread(conn, "bob", "t1") == ["bb.png", "shared.png"]
