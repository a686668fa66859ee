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

Both send a batch's small tensors (scores, rows, task labels) from the worker
by value: a tensor in shared memory costs the receiving process a socket round
trip for its file descriptor (about 1 ms on a busy machine), and each batch
would pay it four times.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler, default_collate

BY_VALUE_BYTES = 1 << 16  # a tensor up to this size crosses from a worker as bytes


class _ByValue:
    """A small tensor as a numpy array: pickled into the worker's message."""

    def __init__(self, array):
        self.array = array


class _SmallByValue:
    """The workers' collate: the dataset's own, then small tensors wrapped to go by value."""

    def __init__(self, collate):
        self.collate = collate or default_collate

    def __call__(self, batch: list):
        return _wrap(self.collate(batch))


def _wrap(x):
    # Only contiguous ones: pickling makes an array contiguous, and a channels-last image
    # that came back channels-first would take other convolution kernels.
    if isinstance(x, torch.Tensor) and x.nbytes <= BY_VALUE_BYTES and x.is_contiguous():
        try:
            return _ByValue(x.numpy())
        except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16): shared memory
            return x
    if type(x) in (list, tuple):
        return type(x)(_wrap(v) for v in x)
    return x


def _unwrap(x, pin: bool):
    if isinstance(x, _ByValue):
        t = torch.from_numpy(x.array)
        return t.pin_memory() if pin else t  # as the loader's pinning thread would have
    if type(x) in (list, tuple):
        return type(x)(_unwrap(v, pin) for v in x)
    return x


def worker_loader(dataset, batch_sampler: Sampler, collate_fn=None, num_workers: int = 0,
                  pin_memory: bool = False, **loader_args) -> DataLoader:
    """A DataLoader whose workers send small tensors by value; read it with `received`."""
    if num_workers > 0:
        collate_fn = _SmallByValue(collate_fn)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
                      num_workers=num_workers, pin_memory=pin_memory, **loader_args)


def received(loader: DataLoader, batch):
    """A batch of `worker_loader` as the dataset's collate made it."""
    return _unwrap(batch, loader.pin_memory) if loader.num_workers > 0 else batch


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
        self.loader = worker_loader(dataset, self.batches, **loader_args)
        self._batches: Iterator | None = None

    def __len__(self) -> int:
        return self.batches.per_epoch()

    def __iter__(self) -> Iterator:
        for _ in range(len(self)):
            if self._batches is None:
                self._batches = iter(self.loader)
            try:
                batch = next(self._batches)
            except StopIteration:  # more epochs than planned: another pass
                self._batches = iter(self.loader)
                batch = next(self._batches)
            yield received(self.loader, batch)


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

    def after(self, i: int) -> int:
        """The range whose batches follow range i's (empty ones yield none)."""
        n = len(self.ranges)
        return next(j % n for j in range(i + 1, i + 1 + n) if self.ranges[j % n])


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
            self.loader = worker_loader(ConcatDataset(self.datasets), self.sampler,
                                        getattr(self.datasets[0], "collate_fn", None),
                                        persistent_workers=True, **self.loader_args)
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
            yield received(self.loader, next(self._batches))
        self._next = self.sampler.after(i)


class _Pass:
    """One evaluation: the batches of one dataset's range of the pool."""

    def __init__(self, pool: EvalPool, i: int):
        self.pool, self.i = pool, i

    def __len__(self) -> int:
        return self.pool.count(self.i)

    def __iter__(self) -> Iterator:
        return self.pool._take(self.i)


class ImagesAhead:
    """A loader whose images are copied to the GPU on a side stream.

    Avalanche copies each minibatch on the compute stream, where the copy of batch k+1
    waits for batch k's kernels to finish: at ResNet18's bf16 inference rate a 256-image
    uint8 batch (38.5 MB) takes roughly 1 ms to copy against 7.5 ms of compute: 10-15%
    of an evaluation. On a side stream the copy runs while batch k still computes (the loop
    queues work ahead of the GPU). Only the images go this way: the small tensors stay
    on the CPU, where the unreadable-target check reads them without a device sync.
    """

    def __init__(self, batches, stream: torch.cuda.Stream):
        self.batches, self.stream = batches, stream

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        device = self.stream.device
        compute = torch.cuda.current_stream(device)
        for x, *rest in self.batches:
            if isinstance(x, torch.Tensor) and x.device.type == "cpu":
                with torch.cuda.stream(self.stream):
                    x = x.to(device, non_blocking=True)
                compute.wait_stream(self.stream)
                x.record_stream(compute)  # its memory is reused only after the compute ran
            yield [x, *rest]
