"""docs/chapter5.md is assembled from one fragment per claim: regenerating one sweep keeps the other rows."""

import json
from pathlib import Path

import pytest

from modalab.experiment.chapter5 import claim_text, generate, main
from modalab.experiment.chapter5_fragments import load_fragments, read_fragment
from tests.experiment.test_exp_report import claim_rows as _rows
from tests.experiment.test_exp_report import fake_sweep

ROOT = Path(__file__).resolve().parents[2]


def test_one_sweep_at_a_time_keeps_the_other_claims(tmp_path):
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    t = fake_sweep(tmp_path / "a" / "temperature", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                   ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2], seeds=range(7))
    first = _rows(generate([t], out))
    b = fake_sweep(tmp_path / "b" / "batch_size", ROOT / "recipes/chapter5/batch_size.yaml", "train.batch_size",
                   ["64", "128"], [0.0, 0.001])
    both = _rows(generate([b], out))  # the temperature sweep's run directories are not passed (nor needed)
    assert len(both) == 2 and both[0] == first[0]  # chapter order: 5.1.3 temperature first, unchanged
    assert "](chapter5/batch_size.html)" in both[1]
    assert sorted(p.name for p in (out.parent / "chapter5").glob("*.json")) == ["batch_size.json", "temperature.json"]
    # rerunning one claim's sweep rewrites its row only
    t2 = fake_sweep(tmp_path / "c" / "temperature", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                    ["0.01", "0.07", "0.3"], [0.3, 0.1, -0.2], seeds=range(7))
    again = _rows(generate([t2], out))
    assert again[1] == both[1] and again[0] != both[0] and "temperature-0.01: 0.90" in again[0]
    text = out.read_text(encoding="utf-8")
    assert "## Provenance" in text and f"from `{t2}`" in text and f"from `{b}`" in text
    # reassembling without sweeps (the CLI with no sweep directories) reproduces the table
    assert main(["--out", str(out)]) == 0
    assert _rows(out.read_text(encoding="utf-8")) == again


def test_fragment_order_is_the_chapters_and_reading_checks_the_fields(tmp_path):
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    b = fake_sweep(tmp_path / "batch_size", ROOT / "recipes/chapter5/batch_size.yaml", "train.batch_size",
                   ["64", "128"], [0.0, 0.001])
    t = fake_sweep(tmp_path / "temperature", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                   ["0.01", "0.07"], [0.0, 0.001])
    generate([b, t], out)
    folder = out.parent / "chapter5"
    assert [f.name for f in load_fragments(folder)] == ["temperature", "batch_size"]
    frag = json.loads((folder / "batch_size.json").read_text(encoding="utf-8"))
    assert frag["metric"] == "zeroshot_top1" and frag["meets_protocol"] is False  # 3 seeds
    bad = folder / "broken.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        read_fragment(bad)
    bad.write_text(json.dumps({**frag, "name": "broken", "row": "| a |\n| b |"}), encoding="utf-8")
    with pytest.raises(ValueError, match="one markdown table row"):
        read_fragment(bad)
    del frag["panel"]
    bad.write_text(json.dumps({**frag, "name": "broken"}), encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json: missing key 'panel'"):
        read_fragment(bad)
    bad.write_text(json.dumps({**frag, "panel": "x"}), encoding="utf-8")  # name batch_size in broken.json
    with pytest.raises(ValueError, match="does not match the file name"):
        read_fragment(bad)


def test_claim_text_stops_at_the_next_header_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# Claim (ours): masks regularise\n#   the encoder.\n# metric: tagging_mAP\n"
                      "# Command: modalab sweep r.yaml\ntask: x\n", encoding="utf-8")
    assert claim_text(recipe) == "(ours): masks regularise the encoder."
    assert "metric:" not in claim_text(ROOT / "recipes/chapter5/spec_augment.yaml")


def test_protocol_needs_seeds_enough_for_the_sign_flip_test_under_holm(tmp_path):
    out = tmp_path / "docs" / "chapter5.md"
    out.parent.mkdir()
    # 6 seeds, 3 comparisons: the smallest sign-flip p is 2/64, x3 under Holm = 0.094 >= 0.05
    six = fake_sweep(tmp_path / "temperature", ROOT / "recipes/chapter5/temperature.yaml", "loss.temperature",
                     ["0.01", "0.07", "0.3"], [0.05, 0.1, -0.2], seeds=range(6))
    row = _rows(generate([six], out))[0]
    assert "**does not meet the protocol** (n=6 seeds cannot reach significance" in row
    assert "at least 0.094 after Holm over 3; needs n >= 7" in row
    # 6 seeds and one comparison: 2/64 = 0.031 < 0.05, the design can decide
    one = fake_sweep(tmp_path / "negative_mix", ROOT / "recipes/chapter5/negative_mix.yaml",
                     "loss.negatives.hard_fraction", ["0.0", "0.2"], [0.0, 0.05], seeds=range(6))
    text = generate([one], out)
    row = [r for r in _rows(text) if "negative_mix.html" in r][0]
    assert "| meets the protocol<br>" in row
    # the verdict table holds the sweep that meets the protocol; the other follows in a table of its own
    head, short = text.split("## Not verdicts yet: sweeps short of the protocol")
    assert "negative_mix.html" in head.split("## Budget")[0] and "temperature.html" not in head.split("## Budget")[0]
    assert "temperature.html" in short.split("## Budget")[0] and "negative_mix.html" not in short.split("## Budget")[0]


def test_compare_and_doctor_default_to_the_recipes_metric_header(tmp_path, capsys):
    from modalab.cli import main as cli

    recipe = tmp_path / "claim.yaml"
    recipe.write_text("# Claim (ours): retrieval.\n# metric: image_to_text_R@1\n"
                      f"base: {ROOT / 'recipes/clip_digits.yaml'}\n", encoding="utf-8")
    s = fake_sweep(tmp_path / "claim", recipe, "model.vision.patch_dropout", ["0.0", "0.5"], [0.0, 0.2],
                   seeds=range(6))
    assert cli(["compare", str(s), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("image_to_text_R@1:") and "0.7000" in out  # 0.5 + 0.2, the header's metric
    cli(["doctor", str(s)])
    assert "val_image_to_text_R@1" in capsys.readouterr().out  # the budget check reads the same metric
    cli(["compare", str(s), "--metric", "zeroshot_top1", "--bootstrap", "200"])
    assert capsys.readouterr().out.startswith("zeroshot_top1:")
