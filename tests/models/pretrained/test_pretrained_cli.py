"""``modalab zeroshot | export | wise-ft`` and ``model.pretrained`` in a recipe, on tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modalab.cli import main
from modalab.config import load
from modalab.experiment.checkpoint_models import load_any
from modalab.experiment.runner import run
from modalab.experiment.wise_ft import interpolate

transformers = pytest.importorskip("transformers")
RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "finetune_clip.yaml"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def random_manifest(folder: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    labels = ["cat", "dog", "seven", "two"]
    lines = []
    for i in range(n):
        h, w = int(rng.integers(28, 60)), int(rng.integers(28, 60))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        lab = labels[i % len(labels)]
        lines.append(json.dumps({"image": f"{i}.png", "text": f"a photo of a {lab}", "label": lab}))
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "m.jsonl"


def digits_manifest(folder: Path, n: int = 160) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
        img.save(folder / f"{i}.png")
        name = NAMES[int(d.target[i])]
        lines.append(json.dumps({"image": f"{i}.png", "text": f"a photo of a {name}", "label": name,
                                 "split": "test" if i % 4 == 0 else "train"}))
    (folder / "digits.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "digits.jsonl"


def test_zeroshot_equals_clipmodel_argmax_on_every_item(tmp_path, clip_dir, capsys):
    man = random_manifest(tmp_path / "data")
    out = tmp_path / "zs"
    assert main(["zeroshot", "--model", f"hf:{clip_dir}", "--data", str(man), "--prompts", "a photo of a {label}",
                 "--out", str(out)]) == 0
    preds = json.loads((out / "artifacts" / "predictions.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file() and "zeroshot_top1" in capsys.readouterr().out
    # the reference: transformers' processor, tokenizer and CLIPModel logits
    cfg = json.loads((clip_dir / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type")
    proc = transformers.CLIPImageProcessorPil(**cfg)
    tok = transformers.AutoTokenizer.from_pretrained(str(clip_dir))
    ref = transformers.CLIPModel.from_pretrained(str(clip_dir)).eval()
    classes = results["classnames"]
    rows = [json.loads(x) for x in man.read_text().splitlines()]
    px = proc(images=[Image.open(man.parent / r["image"]).convert("RGB") for r in rows], return_tensors="pt")
    ids = tok([f"a photo of a {c}" for c in classes], padding="max_length", max_length=16, truncation=True,
              return_tensors="pt")
    with torch.no_grad():
        logits = ref(pixel_values=px["pixel_values"], input_ids=ids["input_ids"]).logits_per_image  # (N, C)
    want = [classes[i] for i in logits.argmax(1).tolist()]
    assert [p["pred"] for p in preds] == want
    acc = np.mean([w == r["label"] for w, r in zip(want, rows)])
    assert results["zeroshot_top1"] == pytest.approx(acc)
    assert results["num_items"] == 12 and results["num_skipped"] == 0


def test_zeroshot_bad_model_is_a_clear_error(tmp_path, capsys):
    man = random_manifest(tmp_path / "data", 4)
    assert main(["zeroshot", "--model", f"hf:{tmp_path / 'missing'}", "--data", str(man)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, clip_dir) -> Path:
    """A short fine-tune of the tiny CLIP on digit images (finetune_clip.yaml)."""
    tmp = tmp_path_factory.mktemp("ft")
    man = digits_manifest(tmp / "digits")
    ov = [f"model.pretrained=hf:{clip_dir}", f"data.path={man}", "train.steps=12", "train.batch_size=32",
          "train.eval_every=0", "optim.lr=3e-3", "optim.warmup_steps=2", "run.progress=false"]
    return run(load(RECIPE, ov), tmp / "run")


def test_finetune_recipe_runs_and_changes_weights(finetuned, clip_dir):
    res = json.loads((finetuned / "results.json").read_text())
    assert 0.0 <= res["zeroshot_top1"] <= 1.0 and res["num_train"] == 108 and res["num_test"] == 40
    assert res["num_val"] == 12  # data.val_fraction 0.1 of the 120 training items
    cfg = (finetuned / "config.yaml").read_text()
    assert f"pretrained: hf:{clip_dir}" in cfg
    m = load_any(str(finetuned))
    pre = load_any(f"hf:{clip_dir}")
    w = m.model.image_encoder.tower.patch_embed.weight
    assert not torch.allclose(w, pre.model.image_encoder.patch_embed.weight)


@pytest.mark.parametrize("to", ["hf", "open_clip"])
def test_export_round_trip(finetuned, tmp_path, to):
    out = tmp_path / "exported"
    assert main(["export", str(finetuned), "--to", to, str(out)]) == 0
    m = load_any(str(finetuned)).model
    g = torch.Generator().manual_seed(0)
    px = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.randint(3, 98, (3, 16), generator=g)
    ids[:, 6] = 98
    tower = m.image_encoder.tower  # the run's model without its pixel adapter: raw 32 px inputs
    with torch.no_grad():
        want_img = torch.nn.functional.normalize(m.image_proj(tower(px)), dim=-1)
        want_txt = m.encode_text(ids)
        if to == "hf":
            ref = transformers.CLIPModel.from_pretrained(str(out)).eval()
            img = ref.get_image_features(pixel_values=px)
            txt = ref.get_text_features(input_ids=ids)
            img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
            assert (out / "tokenizer.json").is_file() and (out / "preprocessor_config.json").is_file()
        else:
            back = load_any(f"open_clip:{out / 'open_clip_pytorch_model.bin'}").model
            img, txt = back.image_proj(back.image_encoder(px)), back.text_proj(back.text_encoder(ids))
    torch.testing.assert_close(torch.nn.functional.normalize(img, dim=-1), want_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.nn.functional.normalize(txt, dim=-1), want_txt, atol=1e-5, rtol=1e-5)


def test_export_refuses_a_scratch_two_tower(tmp_path, capsys):
    ov = ["train.steps=2", "train.batch_size=16", "train.eval_every=0", "data.image_size=8", "run.progress=false"]
    src = run(load(Path(RECIPE).parent / "clip_digits.yaml", ov), tmp_path / "scratch")
    assert main(["export", str(src), "--to", "hf", str(tmp_path / "x")]) == 2
    assert "CLIP/SigLIP layout" in capsys.readouterr().err


def test_wise_ft_endpoints(finetuned, tmp_path):
    out = tmp_path / "wise"
    assert main(["wise-ft", str(finetuned), "--alphas", "0,0.5,1", "--out", str(out)]) == 0
    curve = json.loads((out / "results.json").read_text())["curve"]
    assert [c["alpha"] for c in curve] == [0.0, 0.5, 1.0]
    run_res = json.loads((finetuned / "results.json").read_text())
    assert curve[-1]["zeroshot_top1"] == pytest.approx(run_res["zeroshot_top1"])  # alpha 1 = the run itself
    assert curve[-1]["image_to_text_R@1"] == pytest.approx(run_res["image_to_text_R@1"])
    assert (out / "report.html").read_text().count("<tr>") == 4


def test_interpolate_is_linear():
    a = {"w": torch.zeros(3), "n": torch.tensor([1])}
    b = {"w": torch.ones(3) * 4, "n": torch.tensor([2])}
    assert interpolate(a, b, 0.25)["w"].tolist() == [1.0, 1.0, 1.0]
    assert interpolate(a, b, 0.0)["w"].tolist() == [0.0] * 3 and interpolate(a, b, 1.0)["n"].item() == 2
    with pytest.raises(ValueError, match="differ in keys"):
        interpolate(a, {"w": b["w"]}, 0.5)


def test_wise_ft_reports_seen_and_unseen_classes(tmp_path, clip_dir):
    """Classes kept out of fine-tuning (test rows only) get their own zero-shot curve."""
    man = digits_manifest(tmp_path / "digits", 120)
    rows = [json.loads(x) for x in man.read_text().splitlines()]
    for r in rows:  # 'eight' and 'nine' only in the test split
        if r["label"] in ("eight", "nine"):
            r["split"] = "test"
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ov = [f"model.pretrained=hf:{clip_dir}", f"data.path={man}", "train.steps=4", "train.batch_size=32",
          "train.eval_every=0", "run.progress=false"]
    src = run(load(RECIPE, ov), tmp_path / "run")
    out = tmp_path / "wise"
    assert main(["wise-ft", str(src), "--alphas", "0,1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["unseen_classes"] == ["eight", "nine"]
    for point in res["curve"]:
        assert 0.0 <= point["zeroshot_top1_seen"] <= 1.0 and 0.0 <= point["zeroshot_top1_unseen"] <= 1.0
    n_test = sum(r["split"] == "test" for r in rows)
    n_unseen = sum(r["label"] in ("eight", "nine") for r in rows)
    c = res["curve"][1]  # overall top-1 is the item-weighted mean of the two groups
    mixed = (c["zeroshot_top1_seen"] * (n_test - n_unseen) + c["zeroshot_top1_unseen"] * n_unseen) / n_test
    assert c["zeroshot_top1"] == pytest.approx(mixed)


def test_zeroshot_on_open_clip_checkpoint_matches_hf(tmp_path, clip_dir):
    """The same weights through open_clip's layout (tokenizer.json beside the file) predict the same."""
    from modalab.models.pretrained.export import export_open_clip
    from modalab.models.pretrained.load import load_dual_encoder

    model, pre = load_dual_encoder(f"hf:{clip_dir}")
    oc = export_open_clip(model, tmp_path / "oc", pre, clip_dir)
    man = random_manifest(tmp_path / "data")
    preds = {}
    for name, spec in (("hf", f"hf:{clip_dir}"), ("oc", f"open_clip:{oc / 'open_clip_pytorch_model.bin'}")):
        assert main(["zeroshot", "--model", spec, "--data", str(man), "--out", str(tmp_path / name)]) == 0
        preds[name] = json.loads((tmp_path / name / "artifacts" / "predictions.json").read_text())
    assert preds["hf"] == preds["oc"]
