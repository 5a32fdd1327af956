"""ViT-B/32-shaped CLIP and SigLIP (random weights, real shapes) load and agree with transformers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")


@pytest.mark.slow
def test_b32_shaped_checkpoints_load_and_agree():
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from pretrained_load import main

    rows = main(["--images", "16"])
    for row in rows:
        assert row["agree"] == 1.0, row
        assert row["max_abs_logit_diff"] < 1e-3, row  # logits scaled by 1/tau (up to 100 for CLIP)
    assert {r["family"] for r in rows} == {"clip", "siglip"}
    assert rows[0]["params_m"] > 100
