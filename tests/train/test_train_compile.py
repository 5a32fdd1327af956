"""train.compile: the decision rule, the block selection, compiled losses equal to eager, and the
eager fallback when compilation fails."""

from pathlib import Path

import pytest
import torch
from torch import nn

from modalab.layers import Block, Transformer
from modalab.train.compile import (
    CompileReport, GuardedCompute, block_modules, compile_blocks,
    decide, toolchain_problem,
)
from modalab.train.engine import LoopConfig, fit

CPU = torch.device("cpu")


def test_decide_rule():
    big = 50_000_000
    assert not decide(False, block_params=big, device=CPU, problem=None).used
    assert decide(True, block_params=10, device=CPU, problem=None).used
    r = decide(True, block_params=big, device=CPU, problem="no C++ compiler")
    assert not r.used and "no C++ compiler" in r.reason and "eager" in r.reason
    r = decide("auto", block_params=big, device=CPU, problem=None)  # measured: no gain on CPU
    assert not r.used and "eager on CPU" in r.reason
    assert decide("auto", block_params=10, device=torch.device("cuda"), problem=None).used
    assert not decide("auto", block_params=0, device=CPU, problem=None).used


def test_toolchain_problem_names_the_missing_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert "C++ compiler" in toolchain_problem(CPU)


def test_block_modules_outermost_only():
    outer = nn.Sequential(Transformer(8, 2, 2), nn.Linear(8, 8))
    found = block_modules(outer, (Block,))
    assert len(found) == 2 and all(isinstance(b, Block) for b in found)
    assert block_modules(outer, (Transformer,)) == [outer[0]]


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), Transformer(16, 2, 2), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 5, 6, generator=g), torch.randn(4, 5, 1, generator=g)) for _ in range(4)]
    return model, data


def _train(model, data, wrap=None) -> list[float]:
    losses = []
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "base_lr": 1e-2, "lr": 1e-2}])

    def step_fn(batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        losses.append(loss.item())
        return loss, {}

    fit(model, iter(data), step_fn, opt, LoopConfig(steps=len(data), progress=False, log_every=100),
        log=lambda r: None, batch_size=lambda b: b[0].shape[0], wrap_compute=wrap)
    return losses


def _guard(model, blocks, report, records):
    return lambda compute: GuardedCompute(compute, blocks, report, lambda: model.zero_grad(set_to_none=True),
                                          records.append)


def test_compiled_blocks_match_eager_aot_eager():
    """Dynamo + AOTAutograd (backend aot_eager: the same graphs inductor gets, no C++ needed)."""
    model, data = _problem()
    eager = _train(model, data)
    model, data = _problem()
    blocks = block_modules(model, (Block,))
    compile_blocks(blocks, backend="aot_eager")
    report, records = CompileReport("true", True, "test", modules=len(blocks)), []
    compiled = _train(model, data, _guard(model, blocks, report, records))
    torch._dynamo.reset()
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)
    assert report.used and report.first_step_seconds is not None and report.first_step_seconds > 0
    assert records and records[0]["event"] == "compile" and records[0]["used"]


def _broken_backend(gm, example_inputs):
    raise RuntimeError("simulated inductor failure")


def test_compile_failure_falls_back_to_eager_and_says_why():
    model, data = _problem()
    eager = _train(model, data)
    model, data = _problem()
    blocks = block_modules(model, (Block,))
    compile_blocks(blocks, backend=_broken_backend)
    report, records = CompileReport("true", True, "test", modules=len(blocks)), []
    with pytest.warns(UserWarning, match="simulated inductor failure"):
        fallback = _train(model, data, _guard(model, blocks, report, records))
    torch._dynamo.reset()
    assert not report.used and "simulated inductor failure" in report.reason and "eager" in report.reason
    assert all(b._compiled_call_impl is None for b in blocks)
    # the failed attempt left no gradient and no RNG draw behind: same losses as eager
    assert fallback[-len(eager):] == pytest.approx(eager, rel=1e-6)


def test_model_errors_are_not_swallowed():
    model, data = _problem()
    blocks = block_modules(model, (Block,))
    report = CompileReport("true", True, "test")
    guarded = GuardedCompute(lambda b, bw: (_ for _ in ()).throw(ValueError("bad batch")), blocks, report,
                             lambda: None, lambda r: None)
    with pytest.raises(ValueError, match="bad batch"):
        guarded(data[0], lambda t: None)


RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")
TINY = [
    "model.vision.width=16", "model.vision.depth=1", "model.text.width=16", "model.text.depth=1",
    "model.embed_dim=16", "train.steps=3", "train.batch_size=32", "train.log_every=1",
    "train.eval_every=0", "train.num_threads=1", "run.progress=false", "data.augment=false",
    "data.captions=name", "optim.warmup_steps=0", "eval.batch_size=512",
]


def _losses(run: Path) -> list[float]:
    import json

    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r and "event" not in r]


def test_runner_records_compile_decision(tmp_path):
    import json

    from modalab.cli import main

    assert main(["run", RECIPE, "--out", str(tmp_path / "r"), *TINY, "train.compile=auto"]) == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["compile"]["requested"] == "auto" and info["compile"]["used"] is False
    assert "eager on CPU" in info["compile"]["reason"]


@pytest.mark.slow
def test_inductor_compiled_run_matches_eager(tmp_path):
    """The real thing: inductor on this machine (a cold compile takes minutes on a loaded CPU)."""
    import json

    from modalab.cli import main

    assert main(["run", RECIPE, "--out", str(tmp_path / "e"), *TINY]) == 0
    assert main(["run", RECIPE, "--out", str(tmp_path / "c"), *TINY, "train.compile=true"]) == 0
    torch._dynamo.reset()
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert info["compile"]["used"] is True, info["compile"]
    assert info["compile"]["first_step_seconds"] > 0
    assert _losses(tmp_path / "c") == pytest.approx(_losses(tmp_path / "e"), rel=1e-4)
