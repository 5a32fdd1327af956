"""The tokenizer recipe (issue 10): task "tokenizer", model "image_tokenizer", loss "vqgan"."""

import json
import math
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.tasks.base import TwoOptimizers, implements
from modalab.train.engine import LoopConfig, fit
from modalab.vision.tokenizer_builders import num_down_for

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tokenizer_codebook_sweep.yaml"
TINY = ["train.steps=3", "train.batch_size=32", "train.log_every=1", "run.progress=false",
        "train.num_threads=1", "model.channels=8", "model.latent_dim=8", "eval.samples=2"]
KEYS = ("psnr", "ssim", "codebook_usage", "perplexity", "tokens_per_image")


def _results(tmp_path, extra=()) -> dict:
    out = run(load(RECIPE, [*TINY, *extra]), tmp_path / "run")
    return json.loads((out / "results.json").read_text())


def test_recipe_smoke_vq(tmp_path):
    res = _results(tmp_path)
    for k in KEYS:
        assert k in res and res[k] == res[k]  # present, not NaN
    assert res["tokens_per_image"] == 16 and res["codebook_size"] == 256 and res["steps"] == 3
    assert 0 < res["codebook_usage"] <= 1 and 1 <= res["perplexity"] <= 256
    assert 0 < res["psnr"] < 60 and -1 <= res["ssim"] <= 1
    art = json.loads((tmp_path / "run" / "artifacts" / "reconstructions.json").read_text())
    assert len(art["images"]) == 2 and len(art["recons"][0]) == 16


def test_recipe_fsq_with_8x8_tokens(tmp_path):
    res = _results(tmp_path, ["model.quantizer=fsq", "model.codebook_size=64", "model.token_grid=8"])
    assert res["tokens_per_image"] == 64 and res["codebook_size"] == 64  # levels [4, 4, 4]
    assert 0 < res["codebook_usage"] <= 1 and res["psnr"] == res["psnr"]


@pytest.mark.slow
def test_recipe_continuous_tokens(tmp_path):
    res = _results(tmp_path, ["model.quantizer=continuous"])
    assert res["tokens_per_image"] == 16 and res["codebook_size"] == 0 and res["psnr"] == res["psnr"]
    assert res["codebook_usage"] == "nan" and res["perplexity"] == "nan"  # no codebook (NaN as JSON text)


def test_gan_terms_switch_on_and_train_the_discriminator(tmp_path):
    """The discriminator is a second optimiser of the engine: untouched before ``disc_start``,
    stepped after the tokenizer's step from then on, and the tokenizer's backward still works
    (stepping it inside ``task.step`` had modified weights the generator graph still needed)."""
    recipe = load(RECIPE, [*TINY, "loss.use_gan=true", "loss.disc_start=1", "loss.perceptual_weight=0.1"])
    task = registry.build("task", "tokenizer", recipe, RunDir.create(tmp_path / "r", "", "x"))
    batch = next(iter(task.train_loader()))
    disc = task.objective.discriminator
    second = task.second_optimizer()
    assert second is not None and implements(task, TwoOptimizers)
    before = [p.detach().clone() for p in disc.parameters()]
    logs_seen = []
    fit(task.model, iter([batch, batch]), task.step,
        torch.optim.AdamW([{"params": list(task.model.parameters()), "lr": 1e-3, "base_lr": 1e-3}]),
        LoopConfig(steps=2, log_every=1, progress=False, grad_clip=None), log=logs_seen.append,
        after_step=task.after_step, second=second)
    assert "g_loss" not in logs_seen[0] and "d_loss" not in logs_seen[0] and "perceptual" in logs_seen[0]
    assert {"g_loss", "d_weight", "d_loss"} <= set(logs_seen[1]) and math.isfinite(logs_seen[1]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    assert "objective" in task.extra_modules()


def test_images_reach_the_tokenizer_in_unit_range(tmp_path):
    recipe = load(RECIPE, TINY)
    task = registry.build("task", "tokenizer", recipe, RunDir.create(tmp_path / "r", "", "x"))
    x = task.held_out_images()
    assert x.shape == (450, 1, 16, 16) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_token_grid_must_divide_the_image():
    assert num_down_for(16, 4) == 2 and num_down_for(16, 16) == 0 and num_down_for(32, 4) == 3
    with pytest.raises(ValueError, match="token_grid=3"):
        num_down_for(16, 3)
    with pytest.raises(ValueError, match="token_grid=32"):
        num_down_for(16, 32)


def test_recipe_rejects_unknown_quantizer():
    with pytest.raises(ConfigError):
        load(RECIPE, ["model.quantizer=rvq"])


def test_task_needs_the_vqgan_loss(tmp_path):
    recipe = load(RECIPE, [*TINY, "loss={name: info_nce}"])
    with pytest.raises(ValueError, match="loss.name=vqgan"):
        registry.build("task", "tokenizer", recipe, RunDir.create(tmp_path / "r", "", "x"))


def test_resume_before_the_gan_starts_is_bit_identical(tmp_path):
    """Stopped after step 2, before ``disc_start`` = 3: the checkpoint holds a discriminator that has
    never stepped (no optimizer moments yet); the resumed run switches the GAN on at step 3 as the
    uninterrupted one does and ends bit-identical to it."""
    from resume_helpers import assert_same_checkpoint, stopped_and_resumed

    over = [*TINY, "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=3", "train.eval_every=0",
            "loss.use_gan=true", "loss.disc_start=3", "loss.perceptual_weight=0.1"]
    ref, res = stopped_and_resumed(RECIPE, over, tmp_path, at=2, end=4)
    logs = [json.loads(x) for x in (res / "metrics.jsonl").read_text().splitlines()]
    before = [x for x in logs if x.get("step") == 2 and "loss" in x][-1]
    after = [x for x in logs if x.get("step") == 4 and "loss" in x][-1]
    assert "d_loss" not in before and {"g_loss", "d_loss"} <= set(after)
    assert_same_checkpoint(ref, res, 4, ("model", "objective"))


def test_resume_with_the_gan_on_is_bit_identical(tmp_path):
    """Resumed at step 3 with the discriminator stepping since step 1: its optimizer's moments come
    back from the checkpoint and the runner's replay of ``after_step`` restores the step the GAN
    terms read, so the run ends bit-identical to one never stopped."""
    from resume_helpers import assert_same_checkpoint, stopped_and_resumed

    over = [*TINY, "train.steps=5", "train.checkpoint_every=3", "train.keep_checkpoints=3", "train.eval_every=0",
            "loss.use_gan=true", "loss.disc_start=1", "loss.perceptual_weight=0.1"]
    ref, res = stopped_and_resumed(RECIPE, over, tmp_path, at=3, end=5)
    logs = [json.loads(x) for x in (res / "metrics.jsonl").read_text().splitlines()]
    assert {"g_loss", "d_loss"} <= set([x for x in logs if x.get("step") == 4][-1])
    assert_same_checkpoint(ref, res, 5, ("model", "objective"))
