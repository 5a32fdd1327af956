"""A run never stopped beside one killed after a checkpoint and resumed: the resume tests' pair."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from modalab.config import load
from modalab.experiment.runner import run


def stopped_and_resumed(recipe: Path | str, overrides: list[str], tmp_path: Path, at: int,
                        end: int) -> tuple[Path, Path]:
    """(ref, res): ``ref`` trains to ``end``; ``res`` too, then loses its final checkpoint and results
    (as if killed after step ``at``'s checkpoint) and is resumed. Needs checkpoints at ``at``
    and ``end`` kept (``train.checkpoint_every``, ``train.keep_checkpoints``)."""
    ref = run(load(recipe, overrides), tmp_path / "ref")
    res = run(load(recipe, overrides), tmp_path / "res")
    shutil.rmtree(res / "checkpoints" / f"step_{end:08d}")
    (res / "results.json").unlink()
    run(load(recipe, overrides), res, resume=True)
    assert json.loads((res / "run.json").read_text())["resumed_from"] == f"step_{at:08d}"
    return ref, res


def assert_same_checkpoint(a: Path, b: Path, step: int, names: tuple[str, ...] = ("model",)) -> None:
    """Every tensor of each ``<name>.safetensors`` at ``step`` is bit-identical in runs a and b."""
    for name in names:
        x = load_file(str(a / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))
        y = load_file(str(b / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
