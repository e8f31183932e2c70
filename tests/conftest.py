import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Two intra-op threads at most (the machine has 2 cores); one per pytest-xdist worker.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (inputs differ between tests, not between runs)."""
    return torch.Generator().manual_seed(1234)
