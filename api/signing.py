"""Signed image links: chat front ends fetch `![](url)` without the API key, so a link carries an HMAC of
the image id and the link's expiry instead. Without a valid, unexpired signature an image is served only to its
own tenant."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_home(cls, home: Path, configured: str | None = None) -> Signer:
        """The configured secret, or one created once under LORACLE_HOME (0600) so links survive restarts."""
        if configured:
            return cls(configured.encode())
        path = home / "api_secret"
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                return cls(path.read_text().strip().encode())
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return cls(path.read_text().strip().encode())

    def sign(self, image_id: str, expires: int) -> str:
        """The signature of a link to this image valid until `expires` (Unix seconds)."""
        return hmac.new(self._secret, f"{image_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def link(self, image_id: str, ttl_s: int) -> tuple[int, str]:
        """(expires, signature) for a link valid `ttl_s` seconds from now."""
        expires = int(time.time()) + ttl_s
        return expires, self.sign(image_id, expires)

    def check(self, image_id: str, expires: int | None, signature: str | None) -> str:
        """'valid', 'expired' (the signature is right but its time has passed) or 'invalid'. Any text may come in:
        it is compared as bytes, so a non-ASCII signature is simply wrong."""
        if not signature or expires is None:
            return "invalid"
        if not hmac.compare_digest(self.sign(image_id, expires).encode(), signature.encode("utf-8", "replace")):
            return "invalid"
        return "valid" if expires >= time.time() else "expired"
