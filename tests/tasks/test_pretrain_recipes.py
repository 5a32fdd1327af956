"""recipes/pretrain/*.yaml end to end (3 steps each): the exported folders load through
``model.vision.pretrained`` / transformers and give the trained model's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modalab.config import load
from modalab.experiment.runner import run

transformers = pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "pretrain"
FAST = ["train.steps=3", "train.eval_every=0", "train.log_every=1", "train.batch_size=16",
        "train.num_threads=1", "run.progress=false"]


def _checkpoint(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(sorted(out.glob("checkpoints/step_*/model.safetensors"))[-1]))


def test_vit_digits_exports_a_vitmodel_that_model_vision_pretrained_loads(tmp_path):
    from modalab.models.pretrained.recipe_build import pretrained_image_tower
    from modalab.models.two_tower import VisionTowerConfig
    from modalab.tasks.pretrain_vit import MARKER

    out = run(load(RECIPES / "vit_digits.yaml", FAST + [f"model.export_to={tmp_path / 'pub'}"]), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert res["num_train"] + res["num_val"] + res["num_test"] == 1797 and 0 <= res["val_top1"] <= 1
    assert (tmp_path / "pub" / MARKER).is_file() and (tmp_path / "pub" / "preprocessor_config.json").is_file()
    adapter, width = pretrained_image_tower(VisionTowerConfig(pretrained=f"hf:{tmp_path / 'pub'}"))
    state = _checkpoint(out)
    tower = {k[len("vit.tower."):]: v for k, v in state.items() if k.startswith("vit.tower.")}
    assert width == 96 and all(torch.equal(adapter.tower.state_dict()[k], v) for k, v in tower.items())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    hf = transformers.ViTModel.from_pretrained(str(out / "hf")).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter.eval().tower.forward_tokens(x), hf(pixel_values=x).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_caption_lm_exports_a_gpt2_folder_with_the_runs_tokenizer(tmp_path):
    from modalab.models.pretrained.word_tokenizer_hf import CaptionTokenizer
    from modalab.text.decoder import TextDecoder

    out = run(load(RECIPES / "caption_lm.yaml", FAST + [f"model.export_to={tmp_path / 'pub'}"]), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert 0 <= res["val_lm_token_accuracy"] <= 1 and res["export_hf"] == str(out / "hf")
    state = _checkpoint(out)
    vocab = json.loads(next(out.glob("checkpoints/step_*/trainer_state.json")).read_text())["tokenizer"]["vocab"]
    dec = TextDecoder(len(vocab), 128, 2, 4, 32)
    dec.load_state_dict(state)
    tok = CaptionTokenizer(out / "hf", 12)
    ids = tok(["a handwritten seven", "the number 3, handwritten"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out / "hf")).eval()
    real = (ids != 0)[..., None].expand(-1, -1, len(vocab))
    with torch.no_grad():
        ours, theirs = (dec.eval()(ids, attention_mask=ids != 0),
                        hf(input_ids=ids, attention_mask=(ids != 0).long()).logits)
    torch.testing.assert_close(theirs[real], ours[real], atol=1e-5, rtol=1e-5)
