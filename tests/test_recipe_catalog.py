"""Packaged recipes (list / show / cp, name lookup) and ``modalab explain`` from the schema."""

from pathlib import Path

import pytest
import yaml

from modalab.cli import main
from modalab.config import ConfigError, load
from modalab.explain import explain
from modalab.recipe_catalog import copy_recipe, find_recipe, list_recipes, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_every_recipe_in_the_folder_is_packaged():
    names = {r.name for r in list_recipes()}
    on_disk = {p.relative_to(ROOT / "recipes").with_suffix("").as_posix() for p in (ROOT / "recipes").rglob("*.yaml")}
    assert names == on_disk and "clip_digits" in names and "chapter5/temperature" in names
    assert all(r.claim for r in list_recipes() if r.name == "clip_digits")


def test_names_resolve_like_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: names come from the package
    for spelling in ("clip_digits", "clip_digits.yaml", "recipes/clip_digits.yaml"):
        assert resolve(spelling) == find_recipe("clip_digits")
    assert load("chapter5/temperature").loss.name == "info_nce"
    with pytest.raises(ConfigError, match="did you mean clip_digits"):
        load("clip_digts")
    with pytest.raises(FileNotFoundError, match=r"\.\."):
        find_recipe("../pyproject")


def test_cp_merges_the_base_and_the_copy_loads_the_same(tmp_path):
    dest = copy_recipe("chapter5/temperature", tmp_path / "t.yaml")
    text = dest.read_text()
    assert text.startswith("# Claim") and "base:" not in yaml.safe_load(text)
    assert load(dest).to_dict() == load(find_recipe("chapter5/temperature")).to_dict()
    plain = copy_recipe("clip_digits", tmp_path)  # a folder: keeps the file name; no base: copied verbatim
    assert plain.name == "clip_digits.yaml" and plain.read_text() == find_recipe("clip_digits").read_text()
    with pytest.raises(FileExistsError, match="--force"):
        copy_recipe("clip_digits", plain)


def test_recipes_and_explain_commands(tmp_path, capsys):
    assert main(["recipes", "list"]) == 0
    assert "chapter5/temperature" in capsys.readouterr().out
    assert main(["recipes", "show", "clip_digits"]) == 0
    assert capsys.readouterr().out == find_recipe("clip_digits").read_text()
    assert main(["recipes", "cp", "clip_digits", str(tmp_path / "my.yaml")]) == 0
    assert (tmp_path / "my.yaml").is_file()
    assert main(["explain", "train.steps"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [
        "train.steps: int, default 100", "  number of optimizer steps"]
    assert main(["explain", "train.stepz"]) == 2
    assert "its keys: steps, batch_size" in capsys.readouterr().err


def test_explain_reads_the_schemas():
    t = explain("train")
    assert "batch_size" in t and "global batch of one optimizer step" in t and "'fp32' | 'bf16' | 'fp16'" in t
    v = explain("model.two_tower.vision")
    assert "patch_dropout" in v and "FLIP masking ratio in training" in v
    assert "fixed tau; None = learn the model's logit scale" in explain("loss.info_nce")
    assert "info_nce" in explain("loss") and "siglip" in explain("loss")
    assert "heatmap_size" in explain("eval.contrastive")
    assert "a section: modalab explain model.two_tower.vision" in explain("model.two_tower")
    with pytest.raises(Exception, match="unknown loss 'nope'"):
        explain("loss.nope")
