"""Recipe schema: unknown keys, wrong types, bad overrides, base recipes, dry run."""

from pathlib import Path

import pytest

from modalab.config import ConfigError, from_dict, load, parse_override

MIN = {"data": {"source": "digits"}, "model": {"name": "two_tower"}, "loss": {"name": "info_nce"}}


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_fill_in():
    r = from_dict(MIN)
    assert r.train.steps == 100 and r.optim.name == "adamw" and r.data.image_size == 32
    assert r.model.vision.patch_size == 4 and r.eval.match == "auto"


def test_unknown_key_names_key_line_and_allowed(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel: {name: two_tower}\nloss: {name: info_nce}\n"
                        "train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:5: unknown key 'train.stepz'; allowed keys in 'train': steps, batch_size,")


def test_unknown_nested_key(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel:\n  name: two_tower\n  vision:\n    depht: 2\n"
                        "loss: {name: info_nce}\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert (f"{p}:5: unknown key 'model.vision.depht'; allowed keys in 'model.vision': patch_size, width, depth"
            in str(e.value))


def test_unknown_section(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel: {name: two_tower}\nloss: {name: info_nce}\ntrian: {}\n")
    with pytest.raises(ConfigError, match=r"r.yaml:4: unknown section 'trian'; allowed sections: task, data"):
        load(p)


def test_wrong_type(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel: {name: two_tower}\nloss: {name: info_nce}\n"
                        "train: {steps: many}\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert str(e.value).startswith(f"{p}:4: invalid value 'many' for 'train.steps': Input should be a valid integer")


def test_unknown_component_lists_registered(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel: {name: two_tower}\nloss: {name: infonce}\n")
    with pytest.raises(ConfigError, match=r"r.yaml:3: unknown loss 'infonce' for 'loss.name'; registered: .*info_nce"):
        load(p)


def test_override_types_and_errors(tmp_path):
    p = write(tmp_path, "data: {source: digits}\nmodel: {name: two_tower}\nloss: {name: info_nce}\n")
    r = load(p, ["train.steps=7", "optim.lr=3e-4", "model.vision.depth=1", "run.name=x"])
    assert r.train.steps == 7 and r.optim.lr == 3e-4 and r.model.vision.depth == 1
    with pytest.raises(ConfigError) as e:
        load(p, ["train.steps=abc"])
    assert str(e.value).startswith("override 'train.steps=abc': invalid value 'abc' for 'train.steps'")
    with pytest.raises(ConfigError) as e:
        load(p, ["train.stepz=3"])
    assert str(e.value).startswith("override 'train.stepz=3': unknown key 'train.stepz'; allowed keys in 'train'")
    with pytest.raises(ConfigError, match=r"^bad override 'train.steps': expected key.sub=value"):
        load(p, ["train.steps"])
    with pytest.raises(ConfigError, match=r"'train.steps' is a value \(100\), not a section"):
        load(p, ["train.steps=100", "train.steps.x=1"])


def test_parse_override_values():
    assert parse_override("a.b=1") == (("a", "b"), 1)
    assert parse_override("a=[1, 2]") == (("a",), [1, 2])
    assert parse_override("a=null") == (("a",), None)
    assert parse_override("a=hello world") == (("a",), "hello world")


def test_base_recipe_merges_and_switching_component_resets(tmp_path):
    write(tmp_path, "data: {source: digits, image_size: 16}\nmodel: {name: two_tower, embed_dim: 32}\n"
                    "loss: {name: info_nce}\ntrain: {steps: 9}\n", "base.yaml")
    p = write(tmp_path, "base: base.yaml\nloss: {name: siglip}\ntrain: {batch_size: 8}\n")
    r = load(p)
    assert r.data.image_size == 16 and r.model.embed_dim == 32
    assert r.train.steps == 9 and r.train.batch_size == 8 and r.loss.name == "siglip"


def test_unsafe_run_name_rejected():
    with pytest.raises(ConfigError, match="run.name"):
        from_dict(MIN, ["run.name=../escape"])


def test_dry_run_prints_resolved_config(recipes_dir, capsys):
    from modalab.cli import main

    assert main(["run", f"{recipes_dir}/clip_digits.yaml", "--dry-run", "train.steps=3"]) == 0
    out = capsys.readouterr().out
    assert "steps: 3" in out and "source: digits" in out and "init_logit_scale" in out


def test_cli_reports_config_error(recipes_dir, capsys):
    from modalab.cli import main

    assert main(["run", f"{recipes_dir}/clip_digits.yaml", "--dry-run", "train.nope=1"]) == 2
    assert "unknown key 'train.nope'" in capsys.readouterr().err
