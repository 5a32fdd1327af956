"""VQ-VAE-2 through the tokenizer recipe (``model.quantizer: vqvae2``, issue 21): the same task,
splits, metrics and sweeps as single-level VQ, with the total codebook split between two levels."""

import json
import math
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.eval.reconstruction import evaluate_tokenizer
from modalab.experiment.runner import run
from modalab.vision.vqvae2 import VQVAE2, build_vqvae2

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tokenizer_codebook_sweep.yaml"
TINY = ["train.steps=3", "train.batch_size=32", "train.log_every=1", "run.progress=false",
        "train.num_threads=1", "model.channels=8", "model.latent_dim=8", "eval.samples=2"]


def _model(overrides: list[str]) -> torch.nn.Module:
    recipe = load(RECIPE, [*TINY, "model.quantizer=vqvae2", *overrides])
    return registry.build("model", "image_tokenizer", recipe.model, image_size=16, in_channels=1)


def test_builder_splits_the_codebook_and_stacks_the_maps():
    tok = _model(["model.codebook_size=128", "model.token_grid=4"])
    assert isinstance(tok, VQVAE2)
    assert tok.top.codebook_size == 64 and tok.bottom.codebook_size == 64 and tok.codebook_size == 128
    assert tok.tokens_per_image(16, 16) == 2 * 2 + 4 * 4  # top 2x2 over bottom 4x4
    assert tok.top.use_ema and tok.bottom.dead_code_threshold == 1.0  # the recipe's vq settings reach both
    x = torch.rand(3, 1, 16, 16)
    recon, idx, aux = tok(x)
    assert recon.shape == x.shape and idx.shape == (3, 20) and aux["loss"].ndim == 0
    assert int(idx[:, :4].max()) < 64 <= int(idx[:, 4:].min())  # bottom codes follow the top book


def test_two_top_stages_give_a_1x1_top_map():
    tok = _model(["model.codebook_size=32", "model.token_grid=4", "model.top_down=2"])
    assert tok.tokens_per_image(16, 16) == 1 + 16


@pytest.mark.parametrize("overrides, match", [
    (["model.codebook_size=129"], "even number"),
    (["model.token_grid=2", "model.top_down=2"], "not divisible by 2\\*\\*model.top_down"),
    (["model.code_dim=4"], "not supported with model.quantizer=vqvae2"),
])
def test_bad_settings_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(RECIPE, [*TINY, "model.quantizer=vqvae2", *overrides])


def test_bits_count_each_level_with_its_own_book():
    tok = build_vqvae2(top_codes=8, bottom_codes=32, channels=8, latent_dim=8)
    assert tok.bits_per_image(16, 16) == pytest.approx(4 * 3 + 16 * 5)  # not 20 * log2(40)
    res = evaluate_tokenizer(tok, torch.rand(5, 1, 16, 16))
    assert res["bits_per_image"] == pytest.approx(4 * 3 + 16 * 5) and res["tokens_per_image"] == 20
    assert res["bits_per_image"] < 20 * math.log2(40)


def test_recipe_runs_end_to_end_with_val_and_test(tmp_path):
    out = run(load(RECIPE, [*TINY, "model.quantizer=vqvae2", "model.codebook_size=128", "train.eval_every=2",
                            "data.val_fraction=0.1"]), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert res["tokens_per_image"] == 20 and res["codebook_size"] == 128 and res["quantizer"] == "vqvae2"
    assert res["bits_per_image"] == pytest.approx(20 * 6) and 0 < res["psnr"] < 60
    assert 0 < res["codebook_usage"] <= 1 and res["val_psnr"] == res["val_psnr"]
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in logs if "batch_usage_top" in r)
    assert 0 < step["batch_usage_top"] <= 1 and 0 < step["batch_usage_bottom"] <= 1
