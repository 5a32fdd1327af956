"""What a data source returns: train/test datasets plus what evaluation needs to know."""

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
    """train/test (and optional val) datasets of :class:`Sample`, class names (None without
    labels), every caption the run will train on (for building a vocabulary), image geometry, and
    skipped inputs."""

    train: Dataset
    test: Dataset
    classnames: list[str] | None
    texts: list[str]
    image_size: int
    channels: int
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" for each skipped item
    # what a streaming training set skipped so far (read at the end of the run; None: nothing streams)
    train_skipped: Callable[[], list[str]] | None = None
    val: Dataset | None = None  # held out of train for tuning and model selection (data.val_fraction)

    @property
    def all_skipped(self) -> list[str]:
        """Skipped items of both splits: those found when the source was built, and those the
        training stream met while training (``train_skipped``)."""
        return [*self.skipped, *(self.train_skipped() if self.train_skipped else [])]

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
