"""Noisy image-text pairs (ALIGN's setting): corrupt a fixed, reproducible fraction of the
training pairs and record which.

``data.noise: {swap: 0.2, drop_words: 0.1}``:

- ``swap``: that fraction of training pairs get another pair's caption (the chosen pairs' captions
  are rotated among themselves, so each gets a caption that is not its own);
- ``drop_words``: that fraction of training pairs (drawn independently) lose each word of their
  caption with probability 1/2 (at least one word is kept).

Which pairs are chosen depends only on the run seed and the training-set size; :func:`noise_plan`
returns the record (indices of swapped pairs with their caption donors, indices of word-dropped
pairs) that the run saves. The held-out split is never corrupted.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field
from torch.utils.data import Dataset

from modalab.config import Section
from modalab.data.sample import Sample


class NoiseConfig(Section):
    swap: float = Field(0.0, ge=0, le=1, description="share of training pairs given another pair's caption")
    drop_words: float = Field(0.0, ge=0, le=1, description="share of training pairs losing half their words")


def noise_plan(n: int, swap: float, drop_words: float, seed: int) -> dict[str, Any]:
    """``{"swapped": {index: donor index}, "dropped": [indices]}`` for ``n`` training pairs."""
    rng = random.Random(f"noise/{seed}/{n}")
    k = round(swap * n)
    chosen = sorted(rng.sample(range(n), k)) if k >= 2 else []
    order = chosen[:]
    rng.shuffle(order)
    donors = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a cycle: no fixed point
    dropped = sorted(rng.sample(range(n), round(drop_words * n)))
    return {"swapped": dict(sorted(donors.items())), "dropped": dropped}


def drop_half(text: str, key: str) -> str:
    """``text`` with each word kept with probability 1/2 (deterministic in ``key``; >= 1 word)."""
    rng = random.Random(key)
    words = text.split()
    kept = [w for w in words if rng.random() >= 0.5]
    return " ".join(kept or [words[rng.randrange(len(words))]]) if words else text


class NoisyPairs(Dataset):
    """``base`` with the captions of a :func:`noise_plan` corrupted on access."""

    def __init__(self, base: Dataset, plan: dict[str, Any], seed: int) -> None:
        self.base, self.plan, self.seed = base, plan, seed
        self.dropped = set(plan["dropped"])

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Sample:
        s = self.base[i]
        donor = self.plan["swapped"].get(i)
        if donor is not None:
            s.text = self.base[donor].text
            s.meta = {**s.meta, "noise_swapped_from": donor}
        if i in self.dropped:
            s.text = drop_half(s.text or "", f"drop/{self.seed}/{i}")
            s.meta = {**s.meta, "noise_dropped": True}
        return s


def apply_noise(train: Dataset, cfg: NoiseConfig | None, seed: int) -> tuple[Dataset, dict[str, Any] | None]:
    """The noisy training set and the record of what was corrupted (unchanged, None without noise)."""
    if cfg is None or (cfg.swap == 0 and cfg.drop_words == 0):
        return train, None
    plan = noise_plan(len(train), cfg.swap, cfg.drop_words, seed)  # type: ignore[arg-type]
    record = {"swap": cfg.swap, "drop_words": cfg.drop_words, "num_train": len(train),  # type: ignore[arg-type]
              "swapped": {str(k): v for k, v in plan["swapped"].items()}, "dropped": plan["dropped"]}
    return NoisyPairs(train, plan, seed), record
