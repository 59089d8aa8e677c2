"""Signed image links: chat front ends fetch `![](url)` without the API key, so a link carries an HMAC of
the image id instead. Without a valid signature an image is served only to its own tenant."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
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

    def sign(self, image_id: str) -> str:
        return hmac.new(self._secret, image_id.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, image_id: str, signature: str | None) -> bool:
        return bool(signature) and hmac.compare_digest(self.sign(image_id), signature)
