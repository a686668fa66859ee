"""Loaders whose worker processes outlive Avalanche's per-epoch and per-eval loaders.

Training: a DataLoader's workers stop between epochs. The next epoch's first
batch is only started when the training loop asks for it, so every epoch
opens with the loop waiting for one whole batch to be built (on a GPU at 256
images a batch, a few hundred milliseconds: a large share of an EVA-sized
epoch). `EpochLoader` yields the batches of every epoch from one pass, each
epoch its own shuffle and its own (possibly short) last batch; the loop still
sees one epoch per `iter()`.

Evaluation: the forgetting matrix evaluates every experience after every
step, and Avalanche builds a new DataLoader, starting all its workers, for
each. `EvalPool` keeps one set of workers holding every evaluated dataset;
each evaluation is a pass over one dataset's index range.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler


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


class _Range(Sampler[list[int]]):
    """In-order batches of one index range, set before each pass."""

    def __init__(self, batch_size: int):
        self.batch_size, self.start, self.n = batch_size, 0, 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, self.start + self.n, self.batch_size):
            yield list(range(b, min(b + self.batch_size, self.start + self.n)))


class EvalPool:
    """One set of persistent workers for every evaluated dataset.

    Datasets are registered by their source (the experience's dataset, by
    identity) with the view to load (its eval-mode version). The workers start
    at the first pass after a registration, holding all datasets so far, and
    serve every later pass over any of them.
    """

    def __init__(self, batch_size: int, **loader_args):
        self.loader_args = loader_args
        self.sources: list = []
        self.datasets: list = []
        self.sampler = _Range(batch_size)
        self.loader: DataLoader | None = None

    def add(self, source, data) -> int:
        for i, known in enumerate(self.sources):
            if known is source:
                return i
        self.sources.append(source)
        self.datasets.append(data)
        self.loader = None  # the next pass starts workers that hold the new list
        return len(self.sources) - 1

    def batches(self, source, data) -> _Pass:
        i = self.add(source, data)
        if self.loader is None:
            self.loader = DataLoader(ConcatDataset(self.datasets), batch_sampler=self.sampler,
                                     persistent_workers=True,
                                     collate_fn=getattr(self.datasets[0], "collate_fn", None),
                                     **self.loader_args)
        return _Pass(self, sum(len(d) for d in self.datasets[:i]), len(self.datasets[i]))


class _Pass:
    """One evaluation: the batches of one dataset's range of the pool."""

    def __init__(self, pool: EvalPool, start: int, n: int):
        self.pool, self.start, self.n = pool, start, n

    def __len__(self) -> int:
        return -(-self.n // self.pool.sampler.batch_size)

    def __iter__(self) -> Iterator:
        self.pool.sampler.start, self.pool.sampler.n = self.start, self.n
        yield from self.pool.loader
