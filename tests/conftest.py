import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def recipes_dir() -> str:
    return os.path.join(os.path.dirname(__file__), "..", "recipes")
