"""Signed image links: a signature opens exactly its image under exactly its secret, and the secret a server
creates for itself survives restarts (file mode 0600)."""

from __future__ import annotations

import hashlib
import hmac
import stat

from loracle.api.signing import Signer


def test_signature_is_the_truncated_hmac_of_the_image_id():
    expected = hmac.new(b"s3cret", b"img-1", hashlib.sha256).hexdigest()[:32]
    assert Signer(b"s3cret").sign("img-1") == expected


def test_verify_accepts_only_its_own_image_and_secret():
    signer = Signer(b"s3cret")
    signature = signer.sign("img-1")
    assert signer.verify("img-1", signature) is True
    assert not signer.verify("img-2", signature)
    assert not Signer(b"other").verify("img-1", signature)
    assert not signer.verify("img-1", signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    assert signer.verify("img-1", None) is False and signer.verify("img-1", "") is False


def test_secret_created_once_under_home_and_kept(tmp_path):
    home = tmp_path / "home"
    first = Signer.from_home(home)
    path = home / "api_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    again = Signer.from_home(home)
    assert again.sign("x") == first.sign("x"), "a restart invalidated every link"
    configured = Signer.from_home(home, configured="fixed")
    assert configured.sign("x") == Signer(b"fixed").sign("x") != first.sign("x")


def test_existing_secret_file_is_read_not_replaced(tmp_path):
    (tmp_path / "api_secret").write_text("abc\n")
    assert Signer.from_home(tmp_path).sign("x") == Signer(b"abc").sign("x")
    assert (tmp_path / "api_secret").read_text() == "abc\n"


def test_home_created_at_any_depth_or_reused(tmp_path):
    """LORACLE_HOME may not exist yet (nested) or exist without a secret in it."""
    deep = Signer.from_home(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "api_secret").exists()
    existing = Signer.from_home(tmp_path)
    assert (tmp_path / "api_secret").exists() and existing.sign("x") != deep.sign("x")
