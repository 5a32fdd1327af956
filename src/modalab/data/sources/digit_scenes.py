"""Compositional scenes of real handwritten digits (``data.source: digit_scenes``).

Each scene holds 1-4 of scikit-learn's real 8x8 digit scans, each with a colour, a size and a
place, on an RGB canvas of ``data.image_size`` pixels (scene model, captions and boxes:
``data/scenes.py``). Everything is deterministic per run seed: the scans are split 75/25 between
training and held-out scenes (test scenes show handwriting never seen in training), and scene
``i`` of a split is drawn from ``(seed, split, i)``.

Validation (``data.val_fraction``, default 0.1): that share of the ``data.train_scenes`` generated
training scenes, chosen at random by the seed (``carve_val``), is held out and never trained on.
Val scenes come from the training scans and avoid the held-out compositions, like training scenes;
they are read like test scenes (``full`` captions, fixed negatives), so the probe runs on them too.
The test and novel-composition sets do not change with ``val_fraction``.

Held-out compositions (``data.holdout_compositions``): one colour per digit (digit ``d`` never
appears in colour ``COLOURS[(d + seed) % 4]`` during training); the test split avoids them too,
and a second held-out set of ``data.test_scenes`` scenes, each holding at least one such novel
pair, goes in ``extras["novel_test"]`` for compositional generalisation.

Every sample's ``meta`` carries its ``scene``, the digits' ``phrases`` and pixel ``boxes``, and
``negatives``: one caption per level in ``data.negative_levels`` (``data/scene_negatives.py``),
drawn afresh on each read, for losses that add hard text negatives. Training captions are the
``full`` granularity, or with ``data.captions: mixed`` one of the four granularities per read;
held-out captions are always ``full``. ``data.noise`` corrupts training pairs (``data/noise.py``).
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field, model_validator

from modalab.config import DataBase
from modalab.data.dataset import DataSplits, SampleDataset, carve_val, stratified_split
from modalab.data.noise import NoiseConfig, apply_noise
from modalab.data.sample import Sample
from modalab.data.scene_negatives import KINDS, LEVELS, negative_captions
from modalab.data.scenes import (COLOURS, COUNTS, GRANULARITIES, OPPOSITE, SIZES, Scene, boxes, caption, render,
                                 sample_scene)
from modalab.data.transforms import normalize
from modalab.registry import register

SPLIT_CODES = {"train": 1, "test": 2, "novel": 3}


class DigitScenesConfig(DataBase):
    image_size: int = Field(64, ge=16, description="canvas side in pixels")
    channels: Literal[3] = 3
    min_digits: int = Field(1, ge=1, le=4)
    max_digits: int = Field(4, ge=1, le=4)
    train_scenes: int = Field(4000, ge=1)
    test_scenes: int = Field(500, ge=1)
    captions: Literal["full", "mixed"] = "full"
    holdout_compositions: bool = True
    negative_levels: list[Literal[KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(LEVELS),
        description="one hard-negative caption per entry: L1 / L2 / L3 levels, swap (NegCLIP-style swaps)")
    noise: NoiseConfig | None = None
    render_cache_mb: int = Field(
        512, ge=0, description="keep rendered scenes in memory up to this many MiB per process (a scene "
        "is drawn the same on every read; its negatives and mixed captions are still drawn afresh); 0: off")

    @model_validator(mode="after")
    def _range(self) -> "DigitScenesConfig":
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits={self.min_digits} exceeds max_digits={self.max_digits}")
        return self


def held_out_pairs(seed: int) -> set[tuple[int, str]]:
    """The (digit, colour) compositions kept out of training: one colour per digit."""
    names = list(COLOURS)
    return {(d, names[(d + seed) % len(names)]) for d in range(10)}


def vocabulary() -> list[str]:
    """Every word any scene caption, negative or probe caption can use (a closed vocabulary)."""
    words = [*COLOURS, *SIZES, *COUNTS, *OPPOSITE, *(str(d) for d in range(10)),
             "a", "and", "digit", "digits", ":", ","]
    return [" ".join(words)]


class SceneMaker:
    """Scene ``i`` of a split, its rendering and its sample (see the module docstring)."""

    def __init__(self, cfg: DigitScenesConfig, seed: int) -> None:
        from modalab.data.sources.digits import load_digit_images

        self.cfg, self.seed = cfg, seed
        images, labels = load_digit_images(8)  # (N, 1, 8, 8) in [0, 1]
        self.scans = images[:, 0]  # (N, 8, 8)
        tr, te = stratified_split(labels.tolist(), len(labels), 0.25, seed)
        self.pool = {s: {d: [j for j in idx if int(labels[j]) == d] for d in range(10)}
                     for s, idx in (("train", tr), ("test", te), ("novel", te))}
        self.held = held_out_pairs(seed) if cfg.holdout_compositions else set()
        self._renders: dict[tuple[str, int], tuple[Scene, torch.Tensor]] = {}
        self._cache_left = cfg.render_cache_mb * 2**20  # bytes

    @property
    def cache_bytes(self) -> int:
        """Bytes of rendered images held by the render cache."""
        return self.cfg.render_cache_mb * 2**20 - self._cache_left

    def rendered(self, split: str, i: int) -> tuple[Scene, torch.Tensor]:
        """Scene ``i`` of ``split`` and its normalised image (3, S, S), from the render cache when
        it holds them; the caller gets its own copy of the image."""
        hit = self._renders.get((split, i))
        if hit is not None:
            return hit[0], hit[1].clone()
        sc = self.scene(split, i)
        img = normalize(render(sc, self.scans, self.cfg.image_size))  # (3, S, S)
        size = img.numel() * img.element_size()
        if size <= self._cache_left:
            self._renders[(split, i)] = (sc, img.clone())
            self._cache_left -= size
        return sc, img

    def scene(self, split: str, i: int) -> Scene:
        rng = random.Random(f"digit_scenes/{self.seed}/{split}/{i}")
        n = rng.randint(self.cfg.min_digits, self.cfg.max_digits)
        allowed = lambda d, r: r.choice([c for c in COLOURS if (d, c) not in self.held])  # noqa: E731
        if split != "novel" or not self.held:
            return sample_scene(rng, n, self.pool[split], allowed)
        s = sample_scene(rng, n, self.pool[split], allowed)
        k = rng.randrange(n)  # one digit takes its held-out colour
        ds = list(s.digits)
        ds[k] = type(ds[k])(**{**ds[k].__dict__, "colour": next(c for c in COLOURS if (ds[k].digit, c) in self.held)})
        return s.with_digits(ds)

    def sample(self, split: str, i: int) -> Sample:
        """Sample ``i`` of ``split``; ``val`` sample ``i`` shows training scene ``i`` (a held-out one)."""
        sc, img = self.rendered("train" if split == "val" else split, i)  # img (3, S, S)
        gran = "full"
        if split == "train" and self.cfg.captions == "mixed":
            gran = GRANULARITIES[int(torch.randint(len(GRANULARITIES), ()))]
        rng = random.Random(int(torch.randint(2**31 - 1, ()))) if split == "train" \
            else random.Random(f"negatives/{self.seed}/{split}/{i}")
        meta = {"scene": sc, "phrases": [d.phrase() for d in sc.digits], "boxes": boxes(sc, self.cfg.image_size),
                "negatives": negative_captions(sc, tuple(self.cfg.negative_levels), rng), "split": split}
        return Sample(id=f"digit_scenes/{split}/{i}", media=img, text=caption(sc, gran), meta=meta)


@register("source", "digit_scenes", schema=DigitScenesConfig)
def build_digit_scenes(cfg: DigitScenesConfig, *, seed: int) -> DataSplits:
    """Compositional RGB scenes of 1-4 real digits with colour, size, relation, count captions."""
    maker = SceneMaker(cfg, seed)
    tr_idx, va_idx = carve_val(range(cfg.train_scenes), cfg.val_fraction, seed)  # generated scenes held out
    train = SampleDataset(len(tr_idx), lambda i: maker.sample("train", tr_idx[i]))
    val = SampleDataset(len(va_idx), lambda i: maker.sample("val", va_idx[i])) if va_idx else None
    test = SampleDataset(cfg.test_scenes, lambda i: maker.sample("test", i))
    extras: dict = {}
    if cfg.holdout_compositions:
        extras["novel_test"] = SampleDataset(cfg.test_scenes, lambda i: maker.sample("novel", i))
        extras["held_out_compositions"] = sorted(f"{c} {d}" for d, c in maker.held)
    train, record = apply_noise(train, cfg.noise, seed)
    if record is not None:
        extras["noise"] = record
    texts = [caption(maker.scene("train", i), g) for i in tr_idx
             for g in (GRANULARITIES if cfg.captions == "mixed" else ("full",))]
    return DataSplits(train=train, test=test, classnames=None, texts=[*texts, *vocabulary()],
                      image_size=cfg.image_size, channels=3, extras=extras, val=val)
