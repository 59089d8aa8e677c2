"""Conflict memory in PostgreSQL: per tenant, base model and composition method, repeated evidence, decay."""

from __future__ import annotations

from loracle.db.runs import ConflictScope, known_conflicts, record_conflict


def test_conflicts_need_repeated_evidence_in_one_scope_and_decay(db) -> None:
    scope = ConflictScope("acme", "world", "merge", half_life_days=14)
    with db.connection() as conn:
        record_conflict(conn, scope, 7, 3, "exclusive")
        assert known_conflicts(conn, scope, [3, 7]) == [], "one failure is not evidence enough"
        record_conflict(conn, scope, 3, 7, "exclusive")
        assert known_conflicts(conn, scope, [3, 7, 9]) == [(3, 7, "exclusive")]
        for other in (ConflictScope("other", "world", "merge"), ConflictScope("acme", "tiny", "merge"),
                      ConflictScope("acme", "world", "switch")):
            assert known_conflicts(conn, other, [3, 7]) == [], other
        assert known_conflicts(conn, scope, [3, 9]) == [], "only the pair itself"
        conn.execute("UPDATE adapter_conflicts SET updated_at = now() - interval '20 days'")
        assert known_conflicts(conn, scope, [3, 7]) == [], "two failures 20 days ago have decayed below two"
        record_conflict(conn, scope, 3, 7, "exclusive")
        evidence, failures = conn.execute("SELECT evidence, failures FROM adapter_conflicts").fetchone()
        assert failures == 3 and 1.7 < evidence < 1.9  # 2 * 0.5 ** (20 / 14) + 1
