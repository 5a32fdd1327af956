"""train.precision=auto: the decision from an injected probe, the real probe's cache, and the
record in run.json."""

import json
from pathlib import Path

import torch
from torch import nn

from modalab.train.precision import AUTO_MARGIN, PROBE_ROWS_MAX, choose_precision, matmul_probe, probe_shapes

CPU = torch.device("cpu")


def _probe(fp32: float, bf16: float):
    calls = []

    def probe(m, k, n, device):
        calls.append((m, k, n))
        return fp32, bf16

    return probe, calls


def test_auto_picks_bf16_only_where_faster():
    shapes = [(256, 96, 192), (256, 192, 96)]
    probe, calls = _probe(1.0, 0.5)
    chosen, info = choose_precision("auto", shapes, CPU, probe)
    assert chosen == "bf16" and calls == shapes and info["bf16_speedup"] == 2.0
    assert choose_precision("auto", shapes, CPU, _probe(1.0, 9.0)[0])[0] == "fp32"  # this EPYC
    # a tie or a marginal gain is not worth the rounding: the margin decides
    assert choose_precision("auto", shapes, CPU, _probe(1.0, AUTO_MARGIN)[0])[0] == "bf16"
    assert choose_precision("auto", shapes, CPU, _probe(1.0, AUTO_MARGIN + 0.01)[0])[0] == "fp32"
    assert info["requested"] == "auto" and info["fp32_ms"] == 2000.0 and info["bf16_ms"] == 1000.0


def test_explicit_precisions_are_not_probed():
    probe, calls = _probe(1.0, 0.1)
    for p in ("fp32", "bf16", "fp16"):
        assert choose_precision(p, [(8, 8, 8)], CPU, probe) == (p, {"requested": p, "chosen": p})
    assert calls == []
    assert choose_precision("auto", [], CPU, probe)[0] == "fp32"


def test_probe_shapes_largest_linears():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 32), nn.Linear(32, 8), nn.Linear(8, 32))
    assert probe_shapes(model, rows=100) == [(100, 8, 32), (100, 32, 8)]
    assert probe_shapes(model, rows=10**6, top=1) == [(PROBE_ROWS_MAX, 8, 32)]


def test_matmul_probe_times_both_and_caches():
    a = matmul_probe(8, 16, 8, CPU, reps=2)
    assert len(a) == 2 and all(t > 0 for t in a)
    assert matmul_probe(8, 16, 8, CPU, reps=2) is a  # cached per process


def test_runner_records_the_choice(tmp_path):
    from modalab.cli import main

    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
    tiny = ["model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
            "model.embed_dim=16", "train.steps=2", "train.batch_size=32", "train.eval_every=0",
            "train.num_threads=1", "run.progress=false", "data.augment=false", "eval.batch_size=512",
            "train.precision=auto"]
    assert main(["run", recipe, "--out", str(tmp_path / "r"), *tiny]) == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())["precision"]
    assert info["requested"] == "auto" and info["chosen"] in ("fp32", "bf16")
    assert (info["chosen"] == "bf16") == (info["bf16_ms"] <= AUTO_MARGIN * info["fp32_ms"])
