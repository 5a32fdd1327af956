"""The Python API: the README's example runs as written; load_run gives back the trained model."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modalab
from modalab.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README.md: no ```python block under '## Python API'"
    return blocks[0]


def test_readme_example_runs_and_load_run_reproduces_the_result(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own text, nothing else  # noqa: S102
    res = scope["res"]
    printed = capsys.readouterr().out
    assert f"{res['zeroshot_top1']}" in printed and "torch.Size([2, 64])" in printed
    assert res.path.parent == tmp_path / "runs" and res.config.train.steps == 20
    assert any("loss" in m for m in res.metrics)
    # the loaded model gives the run's zero-shot accuracy again on the same held-out split
    from modalab import registry
    from modalab.eval.zeroshot import class_embeddings, zeroshot_accuracy

    model, tok, cfg = scope["model"], scope["tokenizer"], scope["config"]
    data = registry.build("source", cfg.data.source, cfg.data, seed=cfg.run.seed)
    with torch.no_grad():
        imgs = torch.stack([data.test[i].media for i in range(len(data.test))])
        labels = torch.tensor([data.test[i].label for i in range(len(data.test))])
        cls = class_embeddings(lambda t: model.encode_text(tok(t)), data.classnames, cfg.eval.prompts)
        acc = zeroshot_accuracy(model.encode_image(imgs), cls, labels, ks=(1,))["zeroshot_top1"]
    assert acc == pytest.approx(res["zeroshot_top1"], abs=1e-6)


def test_create_model_by_name_and_by_recipe():
    m = modalab.create_model("two_tower", embed_dim=32, image_size=16, in_channels=1, vocab_size=100)
    assert m.encode_image(torch.randn(2, 1, 16, 16)).shape == (2, 32)
    assert m.encode_text(torch.randint(1, 100, (3, 8))).shape == (3, 32)
    r = modalab.create_model("clip_digits", vocab_size=50)
    assert r.encode_image(torch.randn(1, 1, 16, 16)).shape == (1, 64)  # the recipe's embed_dim, image size
    with pytest.raises(ConfigError, match="vocab_size"):
        modalab.create_model("clip_digits")
    with pytest.raises(ConfigError, match="neither a registered model"):
        modalab.create_model("no_such_thing")
    with pytest.raises(ConfigError, match="embed_dim"):
        modalab.create_model("two_tower", embed_dim="big", image_size=16, in_channels=1, vocab_size=10)


def test_losses_namespace_matches_the_registered_modules():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    ref = modalab.losses.info_nce(img, txt, 10.0)
    logits = 10.0 * img @ txt.T
    plain = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(6))
                   + torch.nn.functional.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(ref, plain)
    assert torch.allclose(modalab.losses.tiled_info_nce(img, txt, 10.0), ref)
    assert "info_nce" in modalab.losses.names() and "siglip" in modalab.losses.names()
    with pytest.raises(ConfigError, match="temprature"):
        modalab.losses.create("info_nce", temprature=0.1)


def test_import_modalab_stays_light():
    code = "import sys, modalab; print('torch' in sys.modules, 'modalab.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        modalab.nope  # noqa: B018
