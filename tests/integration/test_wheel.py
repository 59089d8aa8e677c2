"""A normal (non-editable) install runs: the wheel holds every file the product reads at run time.

The wheel is built from this checkout and installed into a fresh virtualenv whose only view of the test
environment is its third-party packages (a path line, so the checkout's editable install is not seen); the
commands run from an empty folder, so the repository is not on `sys.path` either.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.integration.api_server import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy of the tracked files: building in the checkout would leave build/ there
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((root / "dist").glob("loracle-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("loracle-")}
    assert top_level == {"loracle"}, f"the wheel installs other top-level names: {top_level}"
    for needed in ("loracle/db/migrations/001_catalog.sql", "loracle/generation/world/artifacts/base/unet/config.json",
                   "loracle/generation/world/artifacts/judge/judge.safetensors", "loracle/tools/artifacts/ranker.json",
                   "loracle/api/static/index.html", "loracle/api/static/studio.css", "loracle/api/static/js/app.js"):
        assert needed in names, f"{needed} is missing from the wheel"
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    purelib = next(env_dir.glob("lib/python*/site-packages"))
    (purelib / "test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return env_dir


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORACLE_", "PYTHON"))}
    return {**env, "LORACLE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}


def test_the_wheel_imports_from_its_own_install(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import loracle.agent.graph as g; print(g.__file__)"],
                           cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout


def test_the_installed_command_generates_offline(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([str(installed / "bin" / "loracle"), "generate", "a bold, slanted seven", "--n", "2", "--out", str(out)],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_the_installed_server_becomes_ready(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([str(installed / "bin" / "loracle"), "serve", "--port", str(port)], cwd=tmp_path,
                              env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 300, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(1)
        assert status == 200, server.stderr.read()[-3000:] if server.poll() is not None else f"last /readyz: {status}"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and 'src="/static/js/app.js"' in page.text, "the studio's page"
        assert httpx.get(f"http://127.0.0.1:{port}/static/js/app.js", timeout=5).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
