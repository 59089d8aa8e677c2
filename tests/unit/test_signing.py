"""Signed image links: a signature opens exactly its image, until exactly its expiry, under exactly its secret,
and the secret a server creates for itself survives restarts (file mode 0600)."""

from __future__ import annotations

import hashlib
import hmac
import stat
import time

from loracle.api.signing import Signer


def test_signature_is_the_truncated_hmac_of_the_image_id_and_expiry():
    expected = hmac.new(b"s3cret", b"img-1:1700000000", hashlib.sha256).hexdigest()[:32]
    assert Signer(b"s3cret").sign("img-1", 1700000000) == expected


def test_check_accepts_only_its_own_image_expiry_and_secret():
    signer = Signer(b"s3cret")
    expires, signature = signer.link("img-1", ttl_s=60)
    assert expires - 60 <= time.time() <= expires
    assert signer.check("img-1", expires, signature) == "valid"
    assert signer.check("img-2", expires, signature) == "invalid"
    assert signer.check("img-1", expires + 1, signature) == "invalid", "the expiry can be moved"
    assert Signer(b"other").check("img-1", expires, signature) == "invalid"
    assert signer.check("img-1", expires, signature[:-1] + ("0" if signature[-1] != "0" else "1")) == "invalid"
    assert signer.check("img-1", expires, None) == "invalid" and signer.check("img-1", None, signature) == "invalid"
    assert signer.check("img-1", expires, "é" * 32) == "invalid"
    past = int(time.time()) - 1
    assert signer.check("img-1", past, signer.sign("img-1", past)) == "expired"


def test_secret_created_once_under_home_and_kept(tmp_path):
    home = tmp_path / "home"
    first = Signer.from_home(home)
    path = home / "api_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    again = Signer.from_home(home)
    assert again.sign("x", 1) == first.sign("x", 1), "a restart invalidated every link"
    configured = Signer.from_home(home, configured="fixed")
    assert configured.sign("x", 1) == Signer(b"fixed").sign("x", 1) != first.sign("x", 1)


def test_existing_secret_file_is_read_not_replaced(tmp_path):
    (tmp_path / "api_secret").write_text("abc\n")
    assert Signer.from_home(tmp_path).sign("x", 1) == Signer(b"abc").sign("x", 1)
    assert (tmp_path / "api_secret").read_text() == "abc\n"


def test_home_created_at_any_depth_or_reused(tmp_path):
    """LORACLE_HOME may not exist yet (nested) or exist without a secret in it."""
    deep = Signer.from_home(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "api_secret").exists()
    existing = Signer.from_home(tmp_path)
    assert (tmp_path / "api_secret").exists() and existing.sign("x", 1) != deep.sign("x", 1)
