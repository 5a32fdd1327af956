"""The training data stream: split across processes, reproducible per epoch, resumable.

A task's ``train_loader()`` returns a ``DataLoader`` as it would for one process. ``TrainStream``
keeps its dataset, collate function and workers but replaces the sampler with
:class:`EpochSampler`: a permutation drawn from ``(seed, epoch)`` (the same on every rank), of
which rank ``r`` takes positions ``r, r + W, r + 2W, ...`` — so the W local batches of one step
together are exactly the single-process batch of ``W x`` the size. The position is
``(epoch, batch)``; a resumed stream starts at that batch without loading the ones before it.

Iterable datasets (``data/tar_shards.py``) split themselves by rank and worker; their DataLoader is
rebuilt with the local batch size (``drop_last`` as the dataset says, default True). When they
have ``set_epoch``/``set_position`` the stream calls them, otherwise a resumed stream skips batches
by reading them. Any other iterable is cycled and skipped the same way.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler


class EpochSampler(Sampler[int]):
    """Indices of rank ``rank`` of ``world`` for one epoch, starting at ``start`` (in this rank's share).

    The permutation depends on ``(seed, epoch)`` only; with ``drop_last`` every rank gets
    ``len(dataset) // world`` indices, otherwise the tail is padded from the beginning.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1,
                 drop_last: bool = True) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch, self.start = 0, 0
        self.per_rank = n // world if drop_last else math.ceil(n / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = order[:total] if self.drop_last else (order * 2)[:total]
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class TrainStream:
    """An endless iterator of local batches with a resumable position ``(epoch, batch)``."""

    def __init__(self, loader: Any, *, local_batch: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        self.loader, self.sampler = loader, None
        # a DataLoader draws its workers' base seed when an epoch starts; from its own generator
        # (re-seeded per epoch and rank) so that neither the global RNG nor a resume shifts it
        self.generator, self.seed, self.rank = torch.Generator(), seed, rank
        self.epoch, self.batch = 0, 0
        if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
            self.sampler = EpochSampler(
                len(loader.dataset), shuffle=not _sequential(loader), seed=seed, rank=rank,
                world=world, drop_last=True,
            )
            if self.sampler.per_rank < local_batch:
                raise ValueError(
                    f"train.batch_size: each of the {world} process(es) needs {local_batch} samples "
                    f"per step but gets {self.sampler.per_rank} of {len(loader.dataset)}; lower "
                    f"train.batch_size"
                )
            self.loader = DataLoader(
                loader.dataset, batch_size=local_batch, sampler=self.sampler, drop_last=True,
                collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                persistent_workers=False, generator=self.generator,
            )
        elif isinstance(loader, DataLoader):
            # an iterable dataset splits itself by rank and worker: only the batch size becomes local
            ds = loader.dataset
            self.loader = DataLoader(
                ds, batch_size=local_batch, drop_last=getattr(ds, "drop_last", True),
                collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                persistent_workers=False, generator=self.generator,
            )

    @property
    def dataset(self) -> Any:
        return getattr(self.loader, "dataset", None)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self) -> Iterator[Any]:
        while True:
            start = self.batch  # batches of this epoch already consumed (non-zero after resume)
            it = self._epoch_iter(start)
            drop = 0 if self.sampler is not None or self._positionable() is not None else start
            got = 0
            for b in it:
                got += 1
                if drop:  # no cheaper way for this loader: read and drop
                    drop -= 1
                    continue
                self.batch += 1
                yield b
            if not got and not start:
                raise ValueError(
                    f"the training data yielded no batch in epoch {self.epoch}; is the dataset "
                    f"empty or smaller than one batch per process?"
                )
            self.epoch, self.batch = self.epoch + 1, 0

    def _epoch_iter(self, skip: int) -> Iterator[Any]:
        ds = self.dataset
        if self.sampler is not None:
            self.generator.manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
            self.sampler.set_epoch(self.epoch, skip * self.loader.batch_size)
            return iter(self.loader)
        self.generator.manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
        target = self._positionable()
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.epoch)
        if target is not None and target is not ds and hasattr(target, "set_epoch"):
            target.set_epoch(self.epoch)
        if target is not None:
            target.set_position(skip, self.loader.batch_size)  # batches already consumed this epoch
        return iter(self.loader)

    def _positionable(self) -> Any:
        """What skips consumed batches itself: the dataset, or a task's own loader (e.g.
        ``tasks/varres.VarResLoader``) with ``set_epoch`` and ``set_position``; else None."""
        for obj in (self.dataset, self.loader):
            if obj is not None and hasattr(obj, "set_position"):
                return obj
        return None


def _sequential(loader: DataLoader) -> bool:
    from torch.utils.data import SequentialSampler

    return isinstance(loader.sampler, SequentialSampler)
