"""Adapter downloads against a real local HTTP server that honours Range requests."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loracle.tools.fetch import FetchError, fetch_adapter_file

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class RangeHandler(BaseHTTPRequestHandler):
    cut_after: int | None = None  # bytes to send before dropping the connection (once)
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).requests.append({"path": self.path, "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")})
        if self.path != "/file":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    RangeHandler.requests = []
    RangeHandler.cut_after = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def card(url: str, sha256: str | None = hashlib.sha256(PAYLOAD).hexdigest()) -> dict:
    return {"source": "civitai", "external_id": "42", "name": "Test LoRA", "download_url": url,
            "file_sha256": sha256, "file_name": "../../evil name.safetensors"}


def test_download_verifies_and_lands_inside_the_adapters_folder(server: str, tmp_path: Path) -> None:
    result = fetch_adapter_file(card(f"{server}/file"), tmp_path, token="secret")
    assert result.status == "downloaded"
    assert result.path.parent == tmp_path and result.path.name == "42_evil_name.safetensors"
    assert result.path.read_bytes() == PAYLOAD
    assert RangeHandler.requests[0]["auth"] == "Bearer secret"
    again = fetch_adapter_file(card(f"{server}/file"), tmp_path)
    assert again.status == "present" and len(RangeHandler.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(server: str, tmp_path: Path) -> None:
    RangeHandler.cut_after = 30_000
    with pytest.raises(FetchError, match="run again to resume"):
        fetch_adapter_file(card(f"{server}/file"), tmp_path)
    partial = tmp_path / "42_evil_name.safetensors.part"
    assert partial.stat().st_size == 30_000
    result = fetch_adapter_file(card(f"{server}/file"), tmp_path)
    assert result.status == "resumed"
    assert RangeHandler.requests[-1]["range"] == "bytes=30000-"
    assert result.path.read_bytes() == PAYLOAD and not partial.exists()


def test_sha256_mismatch_is_refused_and_discarded(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_adapter_file(card(f"{server}/file", sha256="0" * 64), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_name_the_adapter(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"civitai:42 \(Test LoRA\): download failed with HTTP 404"):
        fetch_adapter_file(card(f"{server}/missing"), tmp_path)
