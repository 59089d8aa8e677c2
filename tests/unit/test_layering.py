"""The layering and the lint rules hold: a wrong import or an unused name fails the test command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; it comes with the test extras (pip install -e '.[test]')")
    return subprocess.run([path, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    result = _run("lint-imports")
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout[-4000:]
