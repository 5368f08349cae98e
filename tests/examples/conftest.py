"""The examples live outside the package: their folder, and the solver tests' gradient-check
helper, go on the import path."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT / "examples", ROOT / "tests" / "solvers"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small BA problems: one intra-op thread (as in tests/solvers)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
