import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The solver tests use small problems: one intra-op thread avoids OpenMP spin-waiting when
    the 2 cores are shared (measured 3-10x slower with 2 threads on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
