"""Run and sweep report panels: headline first, val_ curves, examples, short arm ids."""

import re

import torch

from modalab.eval.examples import pick_examples, retrieval_examples, thumbnail
from modalab.experiment.report import render, render_sweep
from modalab.experiment.report_panels import split_results, training_panels, validation_keys
from modalab.experiment.sweep_panels import arm_ids, is_categorical
from tests.experiment.report_fakes import fake_run, long_arm_sweep


def test_validation_curves_read_the_val_keys():
    # the bug: the panel read image_to_text_R@1 while validation writes val_image_to_text_R@1
    recs = [{"step": 20, "val_image_to_text_R@1": 0.2, "val_zeroshot_top1": 0.3, "val_monitor/tau": 0.07,
             "val_image_to_text_R@5": 0.5}]
    assert validation_keys(recs) == ["val_image_to_text_R@1", "val_zeroshot_top1"]
    train = [{"step": s, "loss": 1.0, "grad_norm": 1.0, "samples_per_s": 10.0} for s in (1, 2)]
    without = training_panels(train)
    assert len(training_panels(train + recs)) == len(without) + 1
    assert len(without) == 3  # loss, grad norm, throughput (no lr / logit scale logged)


def test_run_report_puts_headline_first_and_groups_monitors(tmp_path):
    rd = fake_run(tmp_path / "run")
    headline, facts, monitors = split_results(rd.read_results())
    assert [k for k, _ in headline][:2] == ["zeroshot_top1", "zeroshot_top5"]
    assert not any(k.startswith("monitor/") for k, _ in headline + facts)
    assert set(monitors) == {"Similarity of pairs", "Collapse", "Geometry", "Temperature"}
    page = render(rd)
    assert page.index("zeroshot_top1") < page.index("Alignment monitors") < page.index("Plots")
    # loss, validation, grad norm, throughput, logit scale, lr, histogram + 8 example thumbnails
    assert page.count('alt="plot"') == 7
    assert page.count('class="thumb"') == 8
    assert page.count("✓") + page.count("✗") == 8 * 5 + 1  # 8 images x top-5, plus the key


def test_retrieval_examples_match_a_plain_ranking():
    g = torch.Generator().manual_seed(0)
    n = 30
    img = torch.nn.functional.normalize(torch.randn(n, 6, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, 6, generator=g), dim=-1)
    labels = torch.arange(n) % 3
    texts = [f"t{i}" for i in range(n)]
    out = retrieval_examples(img, txt, labels, [None] * n, texts, n=8, k=5)
    assert len(out["examples"]) == 8 and out["match"] == "label"
    assert sorted({int(labels[e["index"]]) for e in out["examples"]}) == [0, 1, 2]  # classes in turn
    for ex in out["examples"]:
        i = ex["index"]
        ref = sorted(range(n), key=lambda j: -float(img[i] @ txt[j]))[:5]
        assert [t["text"] for t in ex["top"]] == [texts[j] for j in ref]
        assert [t["correct"] for t in ex["top"]] == [bool(labels[j] == labels[i]) for j in ref]
    pair = retrieval_examples(img, img, None, [None] * n, texts, n=4, k=3)
    assert all(ex["top"][0]["correct"] and ex["top"][0]["text"] == texts[ex["index"]] for ex in pair["examples"])
    assert pick_examples(None, 10, 4) == [0, 3, 6, 9]


def test_thumbnail_scales_to_uint8_and_skips_non_images():
    t = thumbnail(torch.linspace(-1, 1, 2 * 200 * 3).reshape(3, 200, 2)[:, :, :])
    assert t is not None and len(t) == 3 and len(t[0]) == 50  # 200 px subsampled by 4
    flat = [v for c in t for row in c for v in row]
    assert min(flat) == 0 and max(flat) == 255
    assert thumbnail(torch.randn(1, 16000)) is None  # a waveform


def test_sweep_report_uses_short_ids_and_a_legend(tmp_path):
    root = long_arm_sweep(tmp_path / "sw")
    page = render_sweep(root)
    ids = arm_ids(["a", "b", "c", "d"])
    assert list(ids.values()) == ["A1", "A2", "A3", "A4"]
    legend = page[page.index('<table class="legend">'):]
    legend = legend[: legend.index("</table>")]
    assert all(f"<b>{i}</b>" in legend for i in ids.values()) and "loss.name" in legend
    # outside the legend no table cell holds a long arm name
    rest = page.replace(legend, "")
    cells = re.findall(r"<t[dh]>(.*?)</t[dh]>", rest)
    assert cells and max(len(c) for c in cells if "<" not in c) < 60
    assert is_categorical(["info_nce", "siglip"]) and not is_categorical(["0.01", "1e-3"])
