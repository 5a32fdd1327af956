"""The compositional probe: an encoder that binds attributes to objects scores 1.0, a bag-of-words
text encoder scores 0 on the swap types (identical words tie, and ties count as wrong)."""

import random

import torch

from modalab.data.scenes import COLOURS, SIZES, Scene, caption, sample_scene
from modalab.eval.composition import composition_probe, probe_items

WORDS = sorted({*COLOURS, *SIZES, *(str(d) for d in range(10)), "a", "and", "digits", "two", "three", "four",
                "five", "one", "left", "right", "of", "above", "below", ":", ","})


def _scenes(n=40):
    """``n`` scenes with distinct captions."""
    rng = random.Random(0)
    scans = {d: [0] for d in range(10)}
    out, seen = [], set()
    while len(out) < n:
        s = sample_scene(rng, rng.randint(1, 4), scans)
        if caption(s) not in seen:
            seen.add(caption(s))
            out.append(s)
    return out


def _bag(texts):
    out = torch.zeros(len(texts), len(WORDS))
    for i, t in enumerate(texts):
        for w in t.replace(",", " , ").replace(":", " : ").split():
            out[i, WORDS.index(w)] += 1
    return torch.nn.functional.normalize(out, dim=-1)


def test_oracle_and_bag_of_words():
    scenes = _scenes()
    images = torch.arange(len(scenes), dtype=torch.float32)[:, None, None, None]  # (N, 1, 1, 1): the index
    truth = {caption(s): i for i, s in enumerate(scenes)}
    oracle_img = lambda x: torch.nn.functional.one_hot(x.flatten().long(), 64).float()  # noqa: E731
    oracle_txt = lambda ts: torch.stack(  # noqa: E731
        [torch.nn.functional.one_hot(torch.tensor(truth.get(t, 63)), 64).float() for t in ts])
    res = composition_probe(images, scenes, oracle_img, oracle_txt, batch_size=7)
    assert res["mean"] == 1.0 and res["swap_object_n"] > 5 and res["replace_relation_n"] > 3

    bag_img = lambda x: _bag([caption(scenes[int(i)]) for i in x.flatten()])  # noqa: E731
    res = composition_probe(images, scenes, bag_img, _bag)
    assert res["swap_attribute"] == 0.0 and res["swap_object"] == 0.0  # same words: a tie, never a win
    assert res["count"] > 0.9  # an added digit phrase changes the words


def test_probe_items_are_deterministic():
    scenes = _scenes(10)
    assert probe_items(scenes, 1) == probe_items(scenes, 1)
    assert all(t != f for _, _, t, f in probe_items(scenes, 1))
    assert isinstance(scenes[0], Scene)
