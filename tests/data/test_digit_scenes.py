"""data.source=digit_scenes: deterministic per seed, captions match what is drawn (boxes hold the
colour named), held-out compositions stay out of training, negative levels and probe perturbations
change what they claim to change; noisy pairs are reproducible and recorded."""

import random
from collections import Counter

import pytest
import torch
from source_helpers import source_cfg

from modalab.data.noise import NoiseConfig, apply_noise, noise_plan
from modalab.data.scene_negatives import LEVELS, PROBES, negative, perturb
from modalab.data.scenes import COLOURS, caption
from modalab.data.sources.digit_scenes import build_digit_scenes, held_out_pairs


@pytest.fixture(scope="module")
def scenes():
    return build_digit_scenes(source_cfg("digit_scenes", image_size=32, train_scenes=300, test_scenes=60), seed=0)


def _words(text):
    return Counter(text.replace(",", " ").replace(":", " ").split())


def test_deterministic_per_seed_and_rgb(scenes):
    again = build_digit_scenes(source_cfg("digit_scenes", image_size=32, train_scenes=300, test_scenes=60), seed=0)
    a, b = scenes.test[5], again.test[5]
    assert a.text == b.text and torch.equal(a.media, b.media) and a.media.shape == (3, 32, 32)
    other = build_digit_scenes(source_cfg("digit_scenes", image_size=32, train_scenes=300, test_scenes=60), seed=1)
    assert [other.test[i].text for i in range(10)] != [scenes.test[i].text for i in range(10)]
    assert len(scenes.train) == 270 and len(scenes.val) == 30 and scenes.channels == 3 and scenes.classnames is None


def test_boxes_hold_the_named_colour(scenes):
    for i in range(30):
        s = scenes.test[i]
        img = (s.media + 1) / 2  # (3, S, S) in [0, 1]
        assert 1 <= len(s.meta["boxes"]) <= 4 and len(s.meta["phrases"]) == len(s.meta["boxes"])
        for d, (x0, y0, x1, y1) in zip(s.meta["scene"].digits, s.meta["boxes"]):
            assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
            patch = img[:, y0:y1, x0:x1].reshape(3, -1)
            bright = patch[:, patch.max(0).values > 0.3]  # (3, n) the ink
            assert bright.shape[1] > 0
            palette = torch.nn.functional.normalize(torch.tensor([COLOURS[c] for c in COLOURS]), dim=1)
            hue = torch.nn.functional.normalize(bright.mean(1), dim=0)  # the ink's direction in RGB
            assert int((palette @ hue).argmax()) == list(COLOURS).index(d.colour)
        assert float(img.max()) > 0.3


def test_held_out_compositions(scenes):
    held = held_out_pairs(0)
    assert len(held) == 10 and len({d for d, _ in held}) == 10
    for i in range(len(scenes.train)):
        assert not {(d.digit, d.colour) for d in scenes.train[i].meta["scene"].digits} & held
    novel = scenes.extras["novel_test"]
    for i in range(40):
        assert {(d.digit, d.colour) for d in novel[i].meta["scene"].digits} & held


def test_caption_granularities():
    from modalab.data.scenes import Digit, Scene

    sc = Scene((Digit(3, "red", "small"), Digit(7, "blue", "large")), "left of")
    assert caption(sc) == "two digits: a small red 3 left of a large blue 7"
    assert caption(sc, "attributes") == "a red 3 and a blue 7"
    assert caption(sc, "objects") == "a 3 and a 7" and caption(sc, "count") == "two digits"
    three = Scene((Digit(3, "red", "small"), Digit(7, "blue", "large"), Digit(1, "green", "small")))
    assert caption(three) == "three digits: a small red 3, a large blue 7 and a small green 1"


def test_negative_levels_change_what_they_claim(scenes):
    rng = random.Random(0)
    for i in range(60):
        sc = scenes.test[i].meta["scene"]
        l1 = negative(sc, "L1", rng)
        assert not {d.digit for d in l1.digits} & {d.digit for d in sc.digits}
        l2 = negative(sc, "L2", rng)
        assert l2.relation != sc.relation or len(l2.digits) != len(sc.digits)
        l3 = negative(sc, "L3", rng)
        diff = [(a, b) for a, b in zip(sc.digits, l3.digits) if a != b]
        assert len(diff) == 1 and diff[0][0].digit == diff[0][1].digit
        assert (diff[0][0].colour != diff[0][1].colour) != (diff[0][0].size != diff[0][1].size)
    s = scenes.train[0]
    assert len(s.meta["negatives"]) == len(LEVELS) and s.text not in s.meta["negatives"]


def test_probe_perturbations(scenes):
    rng = random.Random(0)
    seen = Counter()
    for i in range(60):
        sc = scenes.test[i].meta["scene"]
        for kind in PROBES:
            p = perturb(sc, kind, rng)
            if p is None:
                continue
            seen[kind] += 1
            if kind in ("swap_attribute", "swap_object"):
                assert _words(caption(p)) == _words(caption(sc)) and caption(p) != caption(sc)
            if kind == "count":
                assert abs(len(p.digits) - len(sc.digits)) == 1
    assert all(seen[k] > 0 for k in PROBES)


def test_noise_reproducible_and_recorded(scenes):
    plan = noise_plan(300, 0.2, 0.1, seed=3)
    assert plan == noise_plan(300, 0.2, 0.1, seed=3) and plan != noise_plan(300, 0.2, 0.1, seed=4)
    assert len(plan["swapped"]) == 60 and len(plan["dropped"]) == 30
    assert all(k != v for k, v in plan["swapped"].items())
    assert sorted(plan["swapped"]) == sorted(plan["swapped"].values())
    plan = noise_plan(len(scenes.train), 0.2, 0.1, seed=3)  # 270 training scenes (30 are val)
    noisy, record = apply_noise(scenes.train, NoiseConfig(swap=0.2, drop_words=0.1), seed=3)
    i, donor = next((k, v) for k, v in plan["swapped"].items() if k not in plan["dropped"])
    assert noisy[i].text == scenes.train[donor].text and noisy[i].meta["noise_swapped_from"] == donor
    j = plan["dropped"][0]
    assert len(noisy[j].text.split()) < len(scenes.train[j].text.split()) or len(scenes.train[j].text.split()) == 1
    clean = [k for k in range(270) if k not in plan["swapped"] and k not in plan["dropped"]][0]
    assert noisy[clean].text == scenes.train[clean].text
    assert record["swapped"][str(i)] == donor and record["num_train"] == 270
    assert apply_noise(scenes.train, None, 0) == (scenes.train, None)


def test_render_cache_changes_nothing_and_stays_within_its_budget():
    from modalab.data.sources.digit_scenes import SceneMaker

    kw = dict(image_size=32, train_scenes=300, test_scenes=60, captions="mixed")
    on = SceneMaker(source_cfg("digit_scenes", **kw), seed=0)
    off = SceneMaker(source_cfg("digit_scenes", render_cache_mb=0, **kw), seed=0)
    for split, i in [("train", 3), ("val", 7), ("test", 5), ("novel", 2), ("train", 3)]:
        torch.manual_seed(i)  # the per-read draws (mixed captions, training negatives) come from torch
        a = on.sample(split, i)
        torch.manual_seed(i)
        b = off.sample(split, i)
        assert torch.equal(a.media, b.media) and a.text == b.text
        assert a.meta["negatives"] == b.meta["negatives"] and a.meta["boxes"] == b.meta["boxes"]
    assert len(on._renders) == 4 and not off._renders  # the repeated read was a hit
    assert on.cache_bytes == 4 * 3 * 32 * 32 * 4 and off.cache_bytes == 0
    first = on.sample("train", 3).media
    first.zero_()  # a caller's in-place change never reaches the cache
    assert on.sample("train", 3).media.abs().sum() > 0
    one = 3 * 32 * 32 * 4  # bytes of one rendered scene
    small = SceneMaker(source_cfg("digit_scenes", **kw), seed=0)
    small._cache_left = 2 * one  # room for two scenes only
    for i in range(5):
        small.sample("test", i)
    assert sorted(small._renders) == [("test", 0), ("test", 1)] and small._cache_left == 0
