"""API keys in the real database: a secret finds its key only while active, is stored only as its sha256, and
an active name is unique."""

from __future__ import annotations

import hashlib

import pytest

from loracle.db.keys import PREFIX, any_active_key, create_key, find_key, hash_key, list_keys, revoke_key


def test_key_lifecycle(db):
    with db.connection() as conn:
        assert not any_active_key(conn)
        key, secret = create_key(conn, "ci", tenant="team-a", admin=True)
        assert secret.startswith(PREFIX) and len(secret) > 40 and key.prefix == secret[:8]
        assert (key.name, key.tenant, key.admin, key.revoked_at) == ("ci", "team-a", True, None)
        stored = conn.execute("SELECT key_hash FROM api_keys").fetchone()[0]
        assert stored == hashlib.sha256(secret.encode()).hexdigest() == hash_key(secret)
        assert any_active_key(conn)
        assert find_key(conn, secret).id == key.id
        assert find_key(conn, secret + "x") is None
        _, other = create_key(conn, "nightly")
        assert revoke_key(conn, "ci") is True
        assert find_key(conn, other) is not None, "revoking one key revoked another"
        revoke_key(conn, "nightly")
        assert revoke_key(conn, "ci") is False, "nothing active left to revoke"
        assert find_key(conn, secret) is None and not any_active_key(conn)
        assert list_keys(conn) == [] and [k.name for k in list_keys(conn, include_revoked=True)] == ["ci", "nightly"]


def test_tenant_defaults_to_the_name_and_names_are_unique_while_active(db):
    with db.connection() as conn:
        first, _ = create_key(conn, "bob")
        assert first.tenant == "bob" and first.admin is False
        with pytest.raises(ValueError, match="'bob' already exists"):
            create_key(conn, "bob")
        revoke_key(conn, "bob")
        second, secret = create_key(conn, "bob")
        assert second.id != first.id and find_key(conn, secret).id == second.id
        later, _ = create_key(conn, "amy")
        assert [k.name for k in list_keys(conn)] == ["bob", "amy"], "oldest first"
        with pytest.raises(ValueError, match="empty"):
            create_key(conn, "  ")
