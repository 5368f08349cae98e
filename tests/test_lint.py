"""The code base passes ruff with the project's settings (pyproject.toml, ruff pinned there)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed (it comes with the [dev] extra: pip install -e '.[dev]')")


def test_ruff_finds_nothing():
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise",
                        "facesfm", "tests", "bench", "tools", "examples"],
                       check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
