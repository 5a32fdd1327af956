"""The validation split: carved from train, stratified or by whole groups, test split untouched."""

from collections import Counter

import pytest
import torch

from modalab import registry
from modalab.data.dataset import DataError, carve_val
from modalab.data.sources.digits import DigitsConfig


def ids(ds) -> list[str]:
    return [ds[i].id for i in range(len(ds))]


def test_carve_val_is_stratified_disjoint_and_deterministic():
    labels = [i % 5 for i in range(200)]
    train = list(range(0, 200, 2)) + list(range(1, 200, 4))  # an uneven subset of the indices
    tr, va = carve_val(train, 0.2, seed=3, labels=labels)
    assert sorted(tr + va) == sorted(train) and not set(tr) & set(va)
    assert len(va) == round(0.2 * len(train))
    share = Counter(labels[j] for j in va)
    whole = Counter(labels[j] for j in train)
    for c in whole:  # every class keeps its share (stratified)
        assert abs(share[c] / len(va) - whole[c] / len(train)) < 0.05
    assert carve_val(train, 0.2, seed=3, labels=labels) == (tr, va)
    assert carve_val(train, 0.2, seed=4, labels=labels) != (tr, va)
    assert carve_val(train, 0.0, seed=3) == (sorted(train), [])


def test_carve_val_keeps_groups_whole():
    groups = [f"writer{i % 7}" for i in range(140)]
    tr, va = carve_val(range(140), 0.3, seed=0, groups=groups)
    g_tr, g_va = {groups[j] for j in tr}, {groups[j] for j in va}
    assert g_va and not g_tr & g_va and len(g_va) == 2  # round(0.3 * 7) whole writers
    with pytest.raises(DataError, match="needs >= 2 groups"):
        carve_val(range(10), 0.1, seed=0, groups=["only"] * 10)
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        carve_val(range(10), 1.5, seed=0)


def test_digits_val_leaves_the_test_split_unchanged():
    with_val = registry.build("source", "digits", DigitsConfig(source="digits"), seed=1)
    without = registry.build("source", "digits", DigitsConfig(source="digits", val_fraction=0), seed=1)
    assert without.val is None
    assert ids(with_val.test) == ids(without.test)  # test numbers stay comparable
    tr, va, te = set(ids(with_val.train)), set(ids(with_val.val)), set(ids(with_val.test))
    assert not tr & va and not va & te and not tr & te and len(tr | va | te) == 1797
    assert tr | va == set(ids(without.train))
    assert len(va) == round(0.1 * 1347)
    assert len({with_val.val[i].label for i in range(len(va))}) == 10  # stratified: every class
    a, b = with_val.val[3], with_val.val[3]  # evaluated like test: no augmentation, fixed caption
    assert torch.equal(a.media, b.media) and a.text == b.text


def test_spoken_digits_val_holds_out_whole_speakers():
    from modalab.data.sources.audio_sources import SpokenDigitsConfig

    cfg = SpokenDigitsConfig(source="spoken_digits", n_speakers=6, per_digit=1, val_fraction=0.25)
    data = registry.build("source", "spoken_digits", cfg, seed=0)
    spk = data.speakers
    assert set(spk["val"]) and not set(spk["val"]) & set(spk["train"]) and not set(spk["val"]) & set(spk["test"])
    assert len(data.val) == len(spk["val"]) == 10 * len(set(spk["val"]))


def test_manifest_val_by_group_and_by_split_column(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from modalab.data.sources.manifest import ManifestConfig

    lines = []
    for i in range(40):
        Image.fromarray(np.full((8, 8), i * 5, np.uint8)).save(tmp_path / f"{i}.png")
        lines.append({"image": f"{i}.png", "text": f"item {i % 4}", "label": str(i % 4), "group": f"w{i % 8}"})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    cfg = ManifestConfig(source="manifest", path=str(tmp_path / "m.jsonl"), val_fraction=0.25, image_size=8)
    data = registry.build("source", "manifest", cfg, seed=0)
    writer = {f"m.jsonl:{n + 1}": r["group"] for n, r in enumerate(lines)}
    g_val = {writer[i] for i in ids(data.val)}
    g_train = {writer[i] for i in ids(data.train)}
    assert g_val and not g_val & g_train
    # records marked split: val are the validation split, whatever val_fraction says
    for n, r in enumerate(lines):
        r.pop("group")
        r["split"] = "test" if n < 10 else ("val" if n < 15 else "train")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    data = registry.build("source", "manifest", cfg, seed=0)
    assert ids(data.val) == [f"m.jsonl:{n}" for n in range(11, 16)]
    assert len(data.train) == 25 and len(data.test) == 10
