"""Fixtures shared by the library tests."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ebflow_lite

# The exercises' reference solutions live in exercises/solutions (imported as `solutions`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exercises"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run on one CPU thread: the tests' tiny operations are faster without thread hand-offs
    (and much faster on a busy machine), and results do not depend on the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    """Seed every RNG before each test and restore the previous states afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng():
        ebflow_lite.seed_everything(0)
        yield
    np.random.set_state(numpy_state)
    random.setstate(python_state)
