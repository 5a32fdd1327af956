"""The captioning and fusion-ablation recipes at smoke size, plus their building blocks.

Caption runs share one tiny cached encoder + language model (module-scoped cache folder), so the
second and later runs also exercise the cache path.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalab.config import ConfigError, load
from modalab.tasks.caption import class_mentions
from modalab.tasks.fusion_ablation import PairDataset
from modalab.experiment.runner import run
from modalab.fusion.agreement import KINDS, agreement_model
from modalab.fusion.lora import LoRALinear

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

def _tiny_encoder(key: str) -> list[str]:
    return [
        f"{key}.pretrain_steps=3", f"{key}.pretrain_batch_size=16", f"{key}.embed_dim=16",
        f"{key}.vision={{patch_size: 8, width: 16, depth: 1, heads: 2}}",
        f"{key}.text={{width: 16, depth: 1, heads: 2, context_length: 12}}",
    ]


TINY_CAPTION = [
    "train.steps=4", "train.batch_size=16", "train.log_every=1", "train.eval_every=0", "run.progress=false",
    "train.num_threads=1", *_tiny_encoder("model.encoder"),
    "model.connector={name: perceiver_resampler, dim: 16, depth: 1, heads: 2, head_dim: 8, num_latents: 2}",
    "model.decoder={dim: 16, depth: 2, heads: 2, max_len: 16, context_length: 12, pretrain_steps: 2}",
    "data.test_fraction=0.05",
]


def _stages(*stages: str) -> str:
    return "train.stages=[" + ", ".join(stages) + "]"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("caption_cache")


def test_caption_task_without_encoder_checkpoint_names_the_key(tmp_path):
    """The task never trains its own encoder: built directly with no checkpoint it says which key."""
    from modalab.experiment.rundir import RunDir
    from modalab.tasks.caption import CaptionTask

    with pytest.raises(ConfigError, match="model.encoder.checkpoint is not set"):
        CaptionTask(load(RECIPES / "caption_digits.yaml", TINY_CAPTION), RunDir.create(tmp_path / "r", "x", "x"))


def test_caption_prerequisite_is_one_contrastive_run_keyed_by_content(tmp_path):
    from modalab.experiment.prerequisites import declared

    rec = load(RECIPES / "caption_digits.yaml", [*TINY_CAPTION, f"model.encoder.cache_dir={tmp_path}"])
    (pre,) = declared(rec)
    assert (pre.key, pre.prefix, pre.cache_dir) == ("model.encoder.checkpoint", "clip", tmp_path)
    assert pre.recipe["task"] == "contrastive" and pre.recipe["model"]["name"] == "two_tower"
    given = load(RECIPES / "caption_digits.yaml", [*TINY_CAPTION, f"model.encoder.checkpoint={tmp_path}"])
    assert declared(given) == []


def _caption(tmp_path, cache, recipe="caption_digits.yaml", extra=()):
    ov = [*TINY_CAPTION, f"model.encoder.cache_dir={cache}", *extra]
    out = run(load(RECIPES / recipe, ov), tmp_path / "run")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, json.loads((out / "results.json").read_text()), metrics


def test_caption_digits_runs_with_stages_and_module_lrs(tmp_path, cache):
    stages = _stages('{name: c, steps: 2, trainable: ["connector.*"], lr: {"connector.*": 3.0e-3}}',
                     '{name: all, steps: 2, trainable: ["connector.*", "decoder.*", "encoder.*"], '
                     'lr: {"encoder.*": 1.0e-4, "connector.*": 2.0e-3, "decoder.*": 5.0e-4}}')
    out, res, metrics = _caption(tmp_path, cache, extra=[stages])
    assert 0.0 <= res["caption_digit_accuracy"] <= 1.0 and res["num_test"] == 90
    assert res["trainable_params"] == res["num_params"]
    assert res["trainable_params_by_stage"]["c"] < res["trainable_params_by_stage"]["all"]
    events = [m for m in metrics if m.get("event") == "stage"]
    assert [(e["step"], e["name"]) for e in events] == [(0, "c"), (2, "all")]
    steps = {m["step"]: m for m in metrics if "lr/encoder" in m}
    assert steps[1]["lr/encoder"] == 0.0 and steps[1]["lr/decoder"] == 0.0 and steps[1]["lr/connector"] > 0
    assert [steps[s]["stage"] for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
    # the stage's per-module learning rates: encoder < decoder < connector, in ratio 1 : 5 : 20
    s3 = steps[3]
    assert s3["lr/encoder"] > 0
    assert (s3["lr/decoder"] / s3["lr/encoder"] == pytest.approx(5)
            and s3["lr/connector"] / s3["lr/encoder"] == pytest.approx(20))
    # cross-check against the optimizer itself: its first group ("connector.*", sorted first)
    assert all(steps[s]["lr/connector"] == pytest.approx(steps[s]["lr"]) for s in (1, 2, 3, 4))
    assert (out / "report.html").is_file()


def test_frozen_modules_do_not_move_and_checkpoint_loads(tmp_path, cache):
    """Connector-only training leaves the encoder (loaded from its run directory) and the cached
    language model bit-identical; the encoder comes from model.encoder.checkpoint this time."""
    (enc_dir,) = [p for p in cache.iterdir() if p.name.startswith("clip-") and p.is_dir()]
    (lm,) = [p for p in cache.iterdir() if p.name.startswith("lm-")]
    stages = _stages('{name: c, steps: 4, trainable: ["connector.*"]}')
    out, res, metrics = _caption(tmp_path, cache, extra=[stages, f"model.encoder.checkpoint={enc_dir}"])
    assert res["encoder_run"] == str(enc_dir)
    assert any(m.get("event") == "decoder_lm" and m["source"] == "cache" for m in metrics)
    final = load_file(str(sorted((out / "checkpoints").iterdir())[-1] / "model.safetensors"))
    clip = load_file(str(sorted((enc_dir / "checkpoints").iterdir())[-1] / "model.safetensors"))
    for k, v in clip.items():
        if k.startswith("image_encoder."):
            assert torch.equal(final["encoder.vit." + k[len("image_encoder."):]], v), k
    for k, v in load_file(str(lm)).items():
        assert torch.equal(final["decoder." + k], v), k
    assert res["trainable_params"] == res["trainable_params_by_stage"]["c"]


@pytest.mark.parametrize("recipe", ["caption_adaptation.yaml", "caption_adaptation_adapters.yaml",
                                    "caption_adaptation_lora.yaml"])
def test_caption_adaptation_counts(tmp_path, cache, recipe):
    out, res, _ = _caption(tmp_path, cache, recipe)
    conn = 0
    final = load_file(str(sorted((out / "checkpoints").iterdir())[-1] / "model.safetensors"))
    conn = sum(v.numel() for k, v in final.items() if k.startswith("connector."))
    extra_params = sum(v.numel() for k, v in final.items() if ".adapter." in k or "lora_" in k)
    assert res["trainable_params"] == conn + extra_params
    assert (extra_params > 0) == (recipe != "caption_adaptation.yaml")
    assert res["trainable_params"] < res["num_params"] // 2


@pytest.mark.parametrize("encoder", ["frozen_clip", "patches"])
def test_fusion_ablation_runs(tmp_path, cache, encoder):
    ov = ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.eval_every=0",
          "run.progress=false", "train.num_threads=1", "model.dim=16", "model.depth=1", "model.heads=2",
          "data.test_fraction=0.05"]
    if encoder == "patches":
        ov.append("model.image_encoder=null")
    else:  # the same tiny encoder as the caption tests: found in their cache
        ov += [*_tiny_encoder("model.image_encoder"), f"model.image_encoder.cache_dir={cache}"]
    out = run(load(RECIPES / "fusion_ablation.yaml", ov), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    assert (res["image_encoder_run"] is None) == (encoder == "patches")
    assert [r["fusion"] for r in res["table"]] == list(KINDS)
    for r in res["table"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["params"] > 0 and r["step_ms"] is None  # 3 steps < warm-up
        assert res[f"accuracy/{r['fusion']}"] == r["accuracy"]
    assert 0.3 < res["chance_accuracy"] < 0.7


def test_class_mentions():
    names = ["zero", "one", "two"]
    assert class_mentions("a handwritten two", names) == {2}
    assert class_mentions("the digit 1 written by hand", names) == {1}
    assert class_mentions("one or two", names) == {1, 2}
    assert class_mentions("the digit 7", names) == set()


def test_pair_dataset_is_balanced_and_fixed():
    from modalab.data.dataset import SampleDataset
    from modalab.data.sample import Sample

    base = SampleDataset(400, lambda i: Sample(id=str(i), media=torch.zeros(1), text=f"c{i % 4}", label=i % 4))
    texts = {c: [f"c{c}"] for c in range(4)}
    ds = PairDataset(base, texts, seed=3, fixed=True)
    items = [ds[i] for i in range(400)]
    assert [s.text for s in items] == [ds[i].text for i in range(400)]  # fixed per (seed, index)
    for i, s in enumerate(items):
        assert (s.text == f"c{i % 4}") == (s.label == 1)
    assert 0.4 < sum(s.label for s in items) / 400 < 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_agreement_models_ignore_padding(kind):
    torch.manual_seed(0)
    m = agreement_model(kind, image_size=8, channels=1, patch=4, vocab_size=20, context_length=12,
                        dim=16, depth=2, heads=2).double().eval()
    for p in m.parameters():  # open the gates so cross-attention matters
        if p.ndim == 0:
            p.data.fill_(0.5)
    img = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    tok = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 8, 9, 10, 2]])
    a = m(img, tok)
    b = m(img, torch.cat([tok, torch.zeros(3, 4, dtype=torch.long)], dim=1))
    assert a.shape == (3,)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # the image matters in every fusion kind
    assert not torch.allclose(a, m(torch.randn_like(img), tok))


def test_lora_captioner_freezes_base_weights(tmp_path, cache):
    from modalab.experiment.prerequisites import resolve
    from modalab.experiment.rundir import RunDir
    from modalab.tasks.caption import CaptionTask

    ov = [*TINY_CAPTION, f"model.encoder.cache_dir={cache}"]
    recipe, _ = resolve(load(RECIPES / "caption_adaptation_lora.yaml", ov), run)
    task = CaptionTask(recipe, RunDir.create(tmp_path / "r", "x", "x"))
    loras = [m for m in task.model.decoder.modules() if isinstance(m, LoRALinear)]
    assert len(loras) == 2 * 2  # q and v in 2 blocks
    assert task.learnable == {n for n, _ in task.model.named_parameters()
                              if n.startswith("connector.") or "lora_" in n}
    assert all(not m.base.weight.requires_grad for m in loras)


def test_fusion_ablation_step_times_travel_with_the_checkpoint(tmp_path):
    """A resumed run's step_ms covers the steps before the resume too (state -> load_state)."""
    from modalab import registry
    from modalab.experiment.rundir import RunDir

    ov = ["train.batch_size=8", "run.progress=false", "model.dim=16", "model.depth=1", "model.heads=2",
          "data.test_fraction=0.05", "model.image_encoder=null"]
    recipe = load(RECIPES / "fusion_ablation.yaml", ov)
    a = registry.build("task", "fusion_ablation", recipe, RunDir.create(tmp_path / "a", "x", "x"))
    a.num_steps = 7
    a.times = {k: [0.01 * (i + 1)] * 3 for i, k in enumerate(a.times)}
    state = json.loads(json.dumps(a.state()))  # as trainer_state.json holds it
    b = registry.build("task", "fusion_ablation", recipe, RunDir.create(tmp_path / "b", "x", "x"))
    b.load_state(state)
    assert b.num_steps == 7 and b.times == a.times
    assert [b.row(k, 0.5)["step_ms"] for k in b.times] == pytest.approx([10.0 * (i + 1) for i in range(len(b.times))])
    with pytest.raises(ValueError, match="'other'"):
        b.load_state({**state, "times": {"other": [1.0]}})
