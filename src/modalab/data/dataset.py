"""What a data source returns: train/val/test datasets plus what evaluation needs to know.

The test split is drawn first (``stratified_split``) and is the same with or without a validation
split, so test numbers stay comparable; :func:`carve_val` then takes ``data.val_fraction`` of the
*training* indices as the validation split (stratified by label, or whole groups -- speakers,
writers, videos -- where the source has groups). Training curves and every choice of setting read
val; test is reported once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch.utils.data import DataLoader, Dataset

from modalab.data.sample import Sample
from modalab.errors import ModalabError


class DataError(ModalabError, ValueError):
    """Bad input data; the message names the file, the line and what was expected."""


@dataclass
class DataSplits:
    """train/test (and val) datasets of :class:`Sample`, class names (None without labels), every
    caption the run will train on (for building a vocabulary), image geometry, and skipped inputs.
    ``val`` is None when the source has none (``data.val_fraction: 0``, or streamed shards)."""

    train: Dataset
    test: Dataset
    classnames: list[str] | None
    texts: list[str]
    image_size: int
    channels: int
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" for each skipped item
    extras: dict[str, Any] = field(default_factory=dict)  # source-specific: more held-out sets, noise record
    # what a streaming training set skipped so far (read at the end of the run; None: nothing streams)
    train_skipped: Callable[[], list[str]] | None = None

    @property
    def all_skipped(self) -> list[str]:
        """Skipped items of both splits: those found when the source was built, and those the
        training stream met while training (``train_skipped``)."""
        return [*self.skipped, *(self.train_skipped() if self.train_skipped else [])]
    val: Dataset | None = None  # carved from train (carve_val); evaluated like test, never trained on

    @property
    def num_skipped(self) -> int:
        return len(self.all_skipped)


class SampleDataset(Dataset):
    """A dataset over ``n`` items produced by ``make(i) -> Sample``."""

    def __init__(self, n: int, make: Callable[[int], Sample]) -> None:
        self.n = n
        self.make = make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.make(i)


def stratified_split(
    labels: Sequence[int] | None, n: int, test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic train/test index split, stratified by label when every class has >= 2 items."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    idx = np.arange(n)
    stratify = None
    if labels is not None:
        counts = np.bincount(np.asarray(labels))
        if counts[counts > 0].min() >= 2:
            stratify = np.asarray(labels)
    train, test = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=stratify, shuffle=True
    )
    return sorted(train.tolist()), sorted(test.tolist())


def carve_val(
    train_idx: Sequence[int],
    fraction: float,
    seed: int,
    labels: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[list[int], list[int]]:
    """Split training indices into ``(train, val)``; ``val`` holds about ``fraction`` of them.

    ``labels`` / ``groups`` are indexed like the whole source (by the values in ``train_idx``).
    With groups, whole groups go to val (at least one, never all), chosen at random by ``seed``;
    otherwise the split is stratified by label when every class has >= 2 training items.
    ``fraction == 0`` gives no validation split.
    """
    import numpy as np

    idx = list(train_idx)
    if fraction == 0:
        return sorted(idx), []
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction must be in [0, 1), got {fraction}")
    if groups is not None:
        names = sorted({groups[j] for j in idx})
        if len(names) < 2:
            raise DataError(f"data.val_fraction={fraction}: a grouped split needs >= 2 groups in the "
                            f"training split, found {names}; set data.val_fraction: 0")
        k = min(len(names) - 1, max(1, round(fraction * len(names))))
        held = set(np.random.default_rng([seed, 11]).choice(names, size=k, replace=False).tolist())
        return sorted(j for j in idx if groups[j] not in held), sorted(j for j in idx if groups[j] in held)
    if len(idx) < 2:
        raise DataError(f"data.val_fraction={fraction}: {len(idx)} training item(s) cannot be split")
    sub = [labels[j] for j in idx] if labels is not None else None
    if sub is not None:  # dense ids for the stratification count
        ids = {c: i for i, c in enumerate(sorted(set(sub)))}
        sub = [ids[c] for c in sub]
        if min(np.bincount(sub)) < 2 or round(fraction * len(idx)) < len(ids):
            sub = None  # too few per class to stratify: a plain random split
    tr, va = stratified_split(sub, len(idx), fraction, seed)
    return sorted(idx[i] for i in tr), sorted(idx[i] for i in va)


def check_batch_fits(n_train: int, batch_size: int) -> None:
    """A training batch must fit in the training split (batches drop the last partial one)."""
    if n_train < batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} exceeds the {n_train} training samples; "
            f"lower train.batch_size"
        )


def epoch_loader(
    dataset: Dataset, batch_size: int, collate_fn: Callable[[list], Any], num_workers: int = 0
) -> DataLoader:
    """Shuffled full batches over ``dataset``, one epoch per iteration."""
    check_batch_fits(len(dataset), batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=num_workers,
    )
