import os

# One intra-op thread everywhere: the test models are tiny, and tests that spawn processes
# (distributed, sweeps, kill/resume) would otherwise oversubscribe the cores many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def recipes_dir() -> str:
    return os.path.join(os.path.dirname(__file__), "..", "recipes")
