"""The digits source holds out a stratified validation split carved from train (data.val_fraction):
train, val and test are disjoint, test is the same as without val, and val is deterministic."""

from __future__ import annotations

from collections import Counter

from modalab import registry


def _splits(**over):
    entry = registry.get("source", "digits")
    cfg = entry.schema.model_validate({"source": "digits", "image_size": 8, **over})
    return entry.builder(cfg, seed=0)


def _ids(ds):
    return [ds[i].id for i in range(len(ds))]


def test_val_is_carved_from_train_stratified_and_test_is_untouched():
    with_val, without = _splits(), _splits(val_fraction=0.0)
    assert without.val is None
    train, val, test = _ids(with_val.train), _ids(with_val.val), _ids(with_val.test)
    assert test == _ids(without.test)  # the reported split does not move
    assert not set(train) & set(val) and not set(val) & set(test) and not set(train) & set(test)
    assert sorted(train + val) == sorted(_ids(without.train))
    assert len(val) == round(0.1 * len(_ids(without.train)))
    counts = Counter(with_val.val[i].label for i in range(len(val)))
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 1


def test_val_is_deterministic_and_unaugmented():
    a, b = _splits(), _splits()
    assert _ids(a.val) == _ids(b.val)
    assert all((a.val[i].media == b.val[i].media).all() and a.val[i].text == b.val[i].text
               for i in range(len(a.val)))


def _names_class(text: str, label: int) -> bool:
    from modalab.data.sources.digits import NAMES

    words = set(text.replace(",", " ").split())
    return NAMES[label] in words or str(label) in words


def test_noise_swaps_training_captions_only_and_is_recorded():
    clean, noisy = _splits(augment=False), _splits(augment=False, noise={"swap": 0.2})
    rec = noisy.extras["noise"]
    n = len(clean.train)
    assert rec["num_train"] == n and len(rec["swapped"]) == round(0.2 * n) and "noise" not in clean.extras
    swapped = {int(i): d for i, d in rec["swapped"].items()}
    labels = [clean.train[i].label for i in range(n)]
    for i, d in swapped.items():
        s = noisy.train[i]
        assert s.meta["noise_swapped_from"] == d and s.label == labels[i]  # the image keeps its label
        assert _names_class(s.text, labels[d])  # the caption is the donor's
    other = sum(labels[i] != labels[d] for i, d in swapped.items())
    assert 0.8 * len(swapped) <= other < len(swapped)  # ~1 donor in 10 shares the class
    assert all(_names_class(noisy.train[i].text, labels[i]) for i in range(n) if i not in swapped)
    assert _ids(noisy.val) == _ids(clean.val)  # val and test are never corrupted
    assert [noisy.test[i].text for i in range(len(noisy.test))] == [clean.test[i].text for i in range(len(clean.test))]
