"""digit_scenes validation split (held-out generated training scenes) and NegCLIP-style swap
negatives (``data.negative_levels: [..., swap]``): each swap type keeps or changes what it claims,
matches the probe's plain perturbation on the first differing pair, and falls back to L3."""

import random
from collections import Counter

import pytest
from source_helpers import source_cfg

from modalab.data.scene_negatives import KINDS, LEVELS, negative, negative_captions, perturb
from modalab.data.scene_swaps import SWAP_TYPES, swap_fields, swap_negative, swap_options, swap_pairs
from modalab.data.scenes import OPPOSITE, Digit, Scene, caption
from modalab.data.sources.digit_scenes import build_digit_scenes, held_out_pairs

CFG = dict(image_size=16, train_scenes=200, test_scenes=40)


@pytest.fixture(scope="module")
def splits():
    return build_digit_scenes(source_cfg("digit_scenes", **CFG), seed=0)


def _words(text):
    return Counter(text.replace(",", " ").replace(":", " ").split())


def test_val_holds_out_generated_training_scenes(splits):
    assert len(splits.train) == 180 and len(splits.val) == 20  # val_fraction 0.1 by default
    train_ids = {splits.train[i].id.rsplit("/", 1)[1] for i in range(len(splits.train))}
    val_ids = {splits.val[i].id.rsplit("/", 1)[1] for i in range(len(splits.val))}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 200
    # a val sample shows the training scene of the same index: same scene, same pixels, full caption
    from modalab.data.sources.digit_scenes import SceneMaker

    maker = SceneMaker(source_cfg("digit_scenes", **CFG), 0)
    j = int(next(iter(val_ids)))
    v = next(splits.val[i] for i in range(len(splits.val)) if splits.val[i].id.endswith(f"/{j}"))
    assert v.meta["scene"] == maker.scene("train", j) and v.meta["split"] == "val"
    assert v.text == caption(maker.scene("train", j))
    # val is read like test: the same negatives on every read; no held-out composition in it
    assert splits.val[3].meta["negatives"] == splits.val[3].meta["negatives"]
    held = held_out_pairs(0)
    assert all(not {(d.digit, d.colour) for d in splits.val[i].meta["scene"].digits} & held for i in range(20))
    # the vocabulary texts are the training scenes' captions only (plus the closed vocabulary)
    assert len(splits.texts) == 180 + 1


def test_val_fraction_leaves_test_and_novel_unchanged(splits):
    none = build_digit_scenes(source_cfg("digit_scenes", val_fraction=0.0, **CFG), seed=0)
    assert none.val is None and len(none.train) == 200
    assert [none.test[i].text for i in range(40)] == [splits.test[i].text for i in range(40)]
    novel_a, novel_b = none.extras["novel_test"], splits.extras["novel_test"]
    assert [novel_a[i].text for i in range(40)] == [novel_b[i].text for i in range(40)]
    other = build_digit_scenes(source_cfg("digit_scenes", val_fraction=0.25, **CFG), seed=0)
    assert len(other.val) == 50 and len(other.train) == 150


def test_swap_types_do_what_they_claim(splits):
    rng = random.Random(0)
    seen = Counter()
    for i in range(len(splits.train)):
        sc = splits.train[i].meta["scene"]
        got = swap_negative(sc, rng)
        if got is None:
            assert not swap_options(sc)
            continue
        kind, neg = got
        seen[kind] += 1
        assert kind in SWAP_TYPES and caption(neg) != caption(sc)
        if kind == "replace_relation":
            assert neg.relation == OPPOSITE[sc.relation] and neg.digits == sc.digits
        else:  # a swap: same bag of words, same set of (field values), two digits changed
            assert _words(caption(neg)) == _words(caption(sc))
            diff = [k for k, (a, b) in enumerate(zip(sc.digits, neg.digits)) if a != b]
            assert len(diff) == 2 and neg.relation == sc.relation
            a, b = diff
            if kind == "swap_object":
                assert (neg.digits[a].digit, neg.digits[b].digit) == (sc.digits[b].digit, sc.digits[a].digit)
            else:
                assert any((getattr(neg.digits[a], f), getattr(neg.digits[b], f))
                           == (getattr(sc.digits[b], f), getattr(sc.digits[a], f)) != (getattr(sc.digits[a], f),
                                                                                        getattr(sc.digits[b], f))
                           for f in ("colour", "size"))
    assert all(seen[k] > 5 for k in SWAP_TYPES)


def test_swap_matches_the_probe_perturbation_on_the_first_pair():
    """The plain reference: the probe's ``perturb`` swaps the first differing pair (colour first)."""
    rng = random.Random(1)
    sc = Scene((Digit(3, "red", "small"), Digit(7, "blue", "large"), Digit(3, "red", "large")))
    i, j = swap_pairs(sc, "colour")[0]
    assert swap_fields(sc, "colour", i, j) == perturb(sc, "swap_attribute", rng)
    i, j = swap_pairs(sc, "digit")[0]
    assert swap_fields(sc, "digit", i, j) == perturb(sc, "swap_object", rng)
    assert swap_pairs(sc, "digit") == [(0, 1), (1, 2)] and "replace_relation" not in swap_options(sc)
    two = Scene((Digit(3, "red", "small"), Digit(3, "red", "small")), "above")
    assert swap_options(two) == {"replace_relation": [("relation", 0, 1)]}
    assert swap_negative(two, rng)[1] == perturb(two, "replace_relation", rng)


def test_swap_falls_back_to_l3_and_negative_captions_carry_it():
    rng = random.Random(2)
    one = Scene((Digit(5, "green", "small"),))
    assert swap_negative(one, rng) is None
    neg = negative(one, "swap", rng)
    diff = [(a, b) for a, b in zip(one.digits, neg.digits) if a != b]
    assert len(neg.digits) == 1 and len(diff) == 1 and diff[0][0].digit == diff[0][1].digit
    assert KINDS == (*LEVELS, "swap")
    sc = Scene((Digit(3, "red", "small"), Digit(7, "blue", "large")), "left of")
    caps = negative_captions(sc, KINDS, rng)
    assert len(caps) == 4 and caption(sc) not in caps
    assert _words(caps[3]) == _words(caption(sc)) or "right of" in caps[3]
    with pytest.raises(ValueError, match="swap"):
        negative(sc, "L4", rng)


def test_recipe_key_accepts_swap_and_rejects_unknown():
    cfg = source_cfg("digit_scenes", negative_levels=["L1", "swap"], **CFG)
    data = build_digit_scenes(cfg, seed=0)
    assert len(data.train[0].meta["negatives"]) == 2
    with pytest.raises(Exception, match="negative_levels"):
        source_cfg("digit_scenes", negative_levels=["swaps"], **CFG)
