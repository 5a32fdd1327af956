"""Same recipe, same seed, one thread: bit-identical metrics (results.json and the training curve)."""

import json
import math
from pathlib import Path

from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TIMING = ("seconds", "per_s")  # wall-clock measurements, the only keys allowed to differ


def _metrics(out: Path) -> tuple[dict, list[dict]]:
    res = json.loads((out / "results.json").read_text())
    kept = {k: v for k, v in res.items() if not any(t in k for t in TIMING)}
    curve = [{k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)}
             for line in (out / "metrics.jsonl").read_text().splitlines()]
    return kept, curve


def test_same_recipe_same_seed_one_thread_is_bit_identical(tmp_path):
    over = ["train.steps=6", "train.batch_size=32", "train.log_every=2", "train.eval_every=3",
            "train.num_threads=1", "run.progress=false", "run.seed=5"]
    a = run(load(RECIPES / "clip_digits.yaml", over), tmp_path / "a")
    b = run(load(RECIPES / "clip_digits.yaml", over), tmp_path / "b")
    (ra, ca), (rb, cb) = _metrics(a), _metrics(b)
    numeric = [k for k, v in ra.items() if isinstance(v, float) and math.isfinite(v)]
    assert len(numeric) >= 20 and "val_zeroshot_top1" in numeric and "test_zeroshot_top1" in numeric
    assert ra == rb  # every metric, bit for bit (floats compared exactly)
    assert ca == cb and any("loss" in m for m in ca)
    assert (a / "artifacts" / "per_item.json").read_text() == (b / "artifacts" / "per_item.json").read_text()
