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
each. `EvalPool` keeps one set of workers holding every evaluated dataset,
building the batches of the next evaluation while the current one runs.
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


class _Cycle(Sampler[list[int]]):
    """In-order batches of every dataset's index range, one range after another and
    round again, from range `first` on: the order in which a stream is evaluated."""

    def __init__(self, batch_size: int):
        self.batch_size, self.first = batch_size, 0
        self.ranges: list[range] = []

    def __iter__(self) -> Iterator[list[int]]:
        if not any(self.ranges):  # nothing to yield: do not spin
            return
        i = self.first
        while True:
            r = self.ranges[i]
            for b in range(r.start, r.stop, self.batch_size):
                yield list(range(b, min(b + self.batch_size, r.stop)))
            i = (i + 1) % len(self.ranges)


class EvalPool:
    """One set of persistent workers for every evaluated dataset, kept one step ahead.

    Datasets are registered by their source (the experience's dataset, by
    identity) with the view to load (its eval-mode version). The workers start
    at the first pass after a registration, holding all datasets so far. Their
    one DataLoader pass runs through the datasets in registration order, round
    and round; so while one dataset is evaluated, the workers already build the
    first batches of the next (the next experience, or the first one again at
    the next evaluation), and an evaluation does not open by waiting for a
    batch. A pass asked for out of that order restarts the pass there (the
    workers stay; the batches built ahead are dropped).
    """

    def __init__(self, batch_size: int, **loader_args):
        self.loader_args = loader_args
        self.sources: list = []
        self.datasets: list = []
        self.sampler = _Cycle(batch_size)
        self.loader: DataLoader | None = None
        self._batches: Iterator | None = None
        self._next: int | None = None  # the range the running pass yields next

    def add(self, source, data) -> int:
        for i, known in enumerate(self.sources):
            if known is source:
                return i
        start = self.sampler.ranges[-1].stop if self.sampler.ranges else 0
        self.sources.append(source)
        self.datasets.append(data)
        self.sampler.ranges.append(range(start, start + len(data)))
        self.loader = self._batches = self._next = None  # new workers hold the new list
        return len(self.sources) - 1

    def batches(self, source, data) -> _Pass:
        i = self.add(source, data)
        if self.loader is None:
            self.loader = DataLoader(ConcatDataset(self.datasets), batch_sampler=self.sampler,
                                     persistent_workers=True,
                                     collate_fn=getattr(self.datasets[0], "collate_fn", None),
                                     **self.loader_args)
        return _Pass(self, i)

    def count(self, i: int) -> int:
        """Batches in dataset i's pass."""
        return -(-len(self.sampler.ranges[i]) // self.sampler.batch_size)

    def _take(self, i: int) -> Iterator:
        n = self.count(i)
        if n == 0:
            return
        if self._next != i:
            self.sampler.first = i
            self._batches = iter(self.loader)  # persistent workers: only the pass restarts
        self._next = None  # unknown until this range is used up (a caller may stop early)
        for _ in range(n):
            yield next(self._batches)
        ranges = self.sampler.ranges
        self._next = next(j % len(ranges) for j in range(i + 1, i + 1 + len(ranges))
                          if ranges[j % len(ranges)])


class _Pass:
    """One evaluation: the batches of one dataset's range of the pool."""

    def __init__(self, pool: EvalPool, i: int):
        self.pool, self.i = pool, i

    def __len__(self) -> int:
        return self.pool.count(self.i)

    def __iter__(self) -> Iterator:
        return self.pool._take(self.i)
