"""Fixtures of the fault suite (helpers live in fault_helpers.py)."""

from pathlib import Path

import pytest
from fault_helpers import RECIPE, TINY


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted tiny run: the kill tests must end bit-identical to it."""
    from modalab.cli import main

    out = tmp_path_factory.mktemp("faults") / "reference"
    assert main(["run", RECIPE, "--out", str(out), *TINY]) == 0
    return out
