"""All epochs of an experience from one DataLoader pass.

A DataLoader's workers stop between epochs: the next epoch's first batch is
only started when the training loop asks for it, so every epoch opens with
the loop waiting for one whole batch to be built (on a GPU at 256 images a
batch, a few hundred milliseconds: a large share of an EVA-sized epoch). Here
one iteration yields the batches of every epoch, each epoch its own shuffle
and its own (possibly short) last batch, so the workers run straight through
the epoch boundaries; the loop still sees one epoch per `iter()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class EpochBatches(Sampler[list[int]]):
    """Index batches of `epochs` epochs; each epoch a new permutation (or in order)."""

    def __init__(self, n: int, batch_size: int, epochs: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0):
        self.n, self.batch_size, self.epochs = n, batch_size, epochs
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed

    def per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        return self.per_epoch() * self.epochs

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
            for b in range(self.per_epoch()):
                yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class EpochLoader:
    """One epoch of batches per `iter()`, all drawn from one long-lived DataLoader pass.

    Asked for more epochs than planned (a plugin changed the count), it starts
    another pass; a new experience gets a new `EpochLoader`.
    """

    def __init__(self, dataset, epochs: int, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, **loader_args):
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))  # from the run's seed
        self.batches = EpochBatches(len(dataset), batch_size, max(epochs, 1), shuffle,
                                    drop_last, seed)
        loader_args.setdefault("collate_fn", getattr(dataset, "collate_fn", None))
        self.loader = DataLoader(dataset, batch_sampler=self.batches, **loader_args)
        self._batches: Iterator | None = None

    def __len__(self) -> int:
        return self.batches.per_epoch()

    def __iter__(self) -> Iterator:
        for _ in range(len(self)):
            if self._batches is None:
                self._batches = iter(self.loader)
            try:
                yield next(self._batches)
            except StopIteration:  # more epochs than planned: another pass
                self._batches = iter(self.loader)
                yield next(self._batches)
