"""train.precision=auto: the decision from an injected probe, the real probes and their cache,
and the record in run.json."""

import json
from pathlib import Path

import torch
from torch import nn

from modalab.layers import Block, Transformer
from modalab.train.precision_auto import (
    AUTO_MARGIN, PROBE_ROWS, block_probe, choose_precision, matmul_probe, model_probe, model_tokens,
)

CPU = torch.device("cpu")


def _probe(fp32: float, bf16: float):
    calls = []

    def probe():
        calls.append(1)
        return fp32, bf16

    return probe, calls


def test_auto_picks_bf16_only_where_faster():
    probe, calls = _probe(1.0, 0.5)
    chosen, info = choose_precision("auto", CPU, probe, lambda: "x")
    assert chosen == "bf16" and calls == [1] and info["bf16_speedup"] == 2.0 and info["probe"] == "x"
    assert info["fp32_ms"] == 1000.0 and info["bf16_ms"] == 500.0 and info["requested"] == "auto"
    assert choose_precision("auto", CPU, _probe(1.0, 1.6)[0])[0] == "fp32"  # digits scale on this EPYC
    # a marginal gain is not worth the rounding: the margin decides
    assert choose_precision("auto", CPU, _probe(1.0, AUTO_MARGIN)[0])[0] == "bf16"
    assert choose_precision("auto", CPU, _probe(1.0, AUTO_MARGIN + 0.01)[0])[0] == "fp32"


def test_explicit_precisions_are_not_probed():
    probe, calls = _probe(1.0, 0.1)
    for p in ("fp32", "bf16", "fp16"):
        assert choose_precision(p, CPU, probe) == (p, {"requested": p, "chosen": p})
    assert calls == []
    assert choose_precision("auto", CPU, None)[0] == "fp32"


def test_model_probe_uses_the_largest_block_and_the_position_table():
    model = nn.Module()
    model.small, model.big = Transformer(8, 1, 2), Transformer(16, 1, 2)
    model.pos_embed = nn.Parameter(torch.zeros(1, 9, 16))
    blocks = [*model.small.blocks, *model.big.blocks]
    assert model_tokens(model) == 9
    probe, what = model_probe(model, blocks, batch=4, device=CPU)
    fp32, bf16 = probe()
    assert "(4, 9, 16)" in what()
    assert fp32 > 0 and bf16 > 0
    assert model.big.blocks[0].norm1.weight.grad is None  # the probe ran on a copy
    lin, what = model_probe(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 32)), [], batch=2, device=CPU)
    assert all(t > 0 for t in lin()) and "F.linear" in what()


def test_a_block_that_needs_more_than_x_falls_back_to_the_linear_probe():
    class Needy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)

        def forward(self, x, frames):  # noqa: ARG002 - needs an extra argument
            return self.fc(self.norm(x))

    model = nn.Sequential(Needy())
    probe, what = model_probe(model, [model[0]], batch=2, device=CPU)
    assert all(t > 0 for t in probe())
    assert "block probe failed: TypeError" in what() and "F.linear" in what()


def test_probes_are_cached_and_capped():
    blk = Block(8, 2, 2.0)
    a = block_probe(blk, batch=10**6, tokens=4, width=8, device=CPU, reps=1)  # capped at PROBE_ROWS rows
    assert block_probe(blk, batch=10**6, tokens=4, width=8, device=CPU, reps=1) is a
    m = matmul_probe(8, 16, 8, CPU, reps=1)
    assert len(m) == 2 and matmul_probe(8, 16, 8, CPU, reps=1) is m
    assert PROBE_ROWS // 4 < 10**6


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
    assert "Block forward+backward" in info["probe"]
    assert (info["chosen"] == "bf16") == (info["bf16_ms"] <= AUTO_MARGIN * info["fp32_ms"])
