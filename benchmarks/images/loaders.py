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
would pay it four times. For a CUDA device the workers write the images into a
`PinnedRing`, page-locked shared memory made once, rather than a new
shared-memory tensor per batch that the loader then copies into pinned memory.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator

import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler, default_collate

from .cache import collate_images

log = logging.getLogger(__name__)

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


class PinnedRing:
    """Batch-sized image slots in shared memory, page-locked once for copies to the GPU.

    Through a DataLoader, each batch a worker makes is a new shared-memory tensor: the
    main process receives its file descriptor, maps it (a page fault per 4 KB) and the
    pinning thread copies it into page-locked memory before the copy to the card can
    start. Measured on an H100 machine with 14 workers, a 256-image 224 px uint8 batch
    costs the main process 12.9 ms that way (the card evaluates it in 7.5 ms). Workers
    that write the batch into a slot of this ring, mapped by every process and registered
    with CUDA once, send only the slot's number: 2.0 ms, the copy to the card included.

    Each batch the DataLoader hands a worker is numbered here (`claim`, in the main
    process), and batch k goes to slot k % slots. More slots than the loader has
    batches in flight, so the slot a worker writes is never the one being read; and
    before a slot is handed out again, `claim` waits until the batch that last used it
    has been copied: a CUDA event recorded on the consumer's stream when it asked for the
    batch after it (`release`). Without pinning (tests), a slot is free once released.
    """

    def __init__(self, slots: int, shape: tuple[int, ...], device: torch.device | None = None):
        self.slots = torch.empty((slots, *shape), dtype=torch.uint8).share_memory_()
        self.device = device if device is not None and device.type == "cuda" else None
        self._next = 0
        self._lent: set[int] = set()
        self._copied: dict[int, object] = {}  # batch number -> its fence (CUDA event)
        if self.device is not None:
            _register(self.slots, self.device)

    def claim(self, indices: list[int]) -> _Numbered:
        """The next batch number for these indices, once its slot is free to write."""
        seq, self._next = self._next, self._next + 1
        last = seq - len(self.slots)
        if last in self._lent:
            raise RuntimeError(f"ring slot {last % len(self.slots)} is still lent out: "
                               "more batches in flight than slots")
        fence = self._copied.pop(last, None)
        if fence is not None:
            fence.synchronize()
        return _Numbered(indices, seq)

    def lend(self, marker: _InRing) -> torch.Tensor:
        """The batch's images, (N, 3, H, W) channels-last, in its slot."""
        self._lent.add(marker.seq)
        return self.slots[marker.seq % len(self.slots), :marker.n].permute(0, 3, 1, 2)

    def release(self, seq: int) -> None:
        """The consumer has queued its work on the batch (it asked for the next one)."""
        self._lent.discard(seq)
        if self.device is not None:
            self._copied[seq] = self.fence()

    def fence(self):
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    @classmethod
    def for_loader(cls, dataset, batch_size: int, in_flight: int,
                   device: torch.device | None) -> PinnedRing | None:
        """A ring shaped like the dataset's first image; None where it cannot be made
        (an empty dataset, no shared memory left, CUDA refusing to pin): the plain path."""
        if len(dataset) == 0:
            return None
        with torch.random.fork_rng(devices=[]):  # a random crop must not shift the run's draws
            height, width, channels = dataset[0][0].permute(1, 2, 0).shape
        try:
            return cls(in_flight + 2, (batch_size, height, width, channels), device)
        except RuntimeError as err:
            log.warning("batches go through shared memory, not a pinned ring: %s", err)
            return None


def _register(slots: torch.Tensor, device: torch.device) -> None:
    cudart = torch.cuda.cudart()
    with torch.cuda.device(device):
        err = cudart.cudaHostRegister(slots.data_ptr(), slots.nbytes, 0)
    if err != cudart.cudaError.success:
        raise RuntimeError(f"cudaHostRegister of {slots.nbytes >> 20} MB failed: {err}")
    # Unpinned before the memory goes, once no copy from it can still be running (not at
    # exit: the process's memory goes with it).
    weakref.finalize(slots, _unregister, slots.data_ptr(), device).atexit = False


def _unregister(pointer: int, device: torch.device) -> None:
    torch.cuda.synchronize(device)
    torch.cuda.cudart().cudaHostUnregister(pointer)


class _Numbered(list):
    """A batch's indices with its number (pickled to the worker with them)."""

    def __init__(self, indices: list[int], seq: int):
        super().__init__(indices)
        self.seq = seq


class _InRing:
    """Sent by a worker in place of the images: they are in the ring's slot for `seq`."""

    def __init__(self, seq: int, n: int):
        self.seq, self.n = seq, n


class _Claims(Sampler[list[int]]):
    """The loader's index batches, each numbered by the ring as the DataLoader sends it."""

    def __init__(self, batches: Sampler, ring: PinnedRing):
        self.batches, self.ring = batches, ring

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[_Numbered]:
        return (self.ring.claim(indices) for indices in self.batches)


class _IntoRing(torch.utils.data.Dataset):
    """The worker's side: a batch's items collated straight into its slot of the ring."""

    def __init__(self, dataset, slots: torch.Tensor):
        self.dataset, self.slots = dataset, slots

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: _Numbered) -> list:
        items = [self.dataset[i] for i in indices]
        slot = self.slots[indices.seq % len(self.slots)]
        if len(items) > len(slot) or any(item[0].permute(1, 2, 0).shape != slot.shape[1:]
                                         for item in items):
            return _wrap(collate_images(items))  # another size: through shared memory
        _, *rest = collate_images(items, out=slot[:len(items)])
        return _wrap([_InRing(indices.seq, len(items)), *rest])


class WorkerLoader:
    """A DataLoader over index batches, each `iter()` one pass of batches as the dataset's
    collate made them. Its workers send small tensors by value, and, with the cache's
    `collate_images` and pinned memory for a CUDA device (or `ring=True`), write the
    images into a `PinnedRing`."""

    def __init__(self, dataset, batch_sampler: Sampler, collate_fn=None, num_workers: int = 0,
                 pin_memory: bool = False, device: torch.device | None = None,
                 ring: bool | None = None, **loader_args):
        self.ring, self.pin = None, pin_memory and num_workers > 0
        device = torch.device(device) if device is not None else None
        if num_workers > 0 and collate_fn is collate_images and \
                (ring or (ring is None and pin_memory and device is not None
                          and device.type == "cuda")):
            in_flight = loader_args.get("prefetch_factor") or 2
            # The ring pins its memory only for a CUDA device.
            self.ring = PinnedRing.for_loader(dataset, batch_sampler.batch_size,
                                              in_flight * num_workers, device)
        if self.ring is not None:
            dataset = _IntoRing(dataset, self.ring.slots)
            batch_sampler, collate_fn = _Claims(batch_sampler, self.ring), _identity
        elif num_workers > 0:
            collate_fn = _SmallByValue(collate_fn)
        self.loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
                                 num_workers=num_workers, pin_memory=pin_memory, **loader_args)

    def __iter__(self) -> Iterator:
        if self.loader.num_workers == 0:
            yield from self.loader
            return
        for batch in self.loader:
            marker = batch[0] if isinstance(batch, list) and batch else None
            if not isinstance(marker, _InRing):
                yield _unwrap(batch, self.pin)
                continue
            try:
                yield [self.ring.lend(marker), *_unwrap(batch[1:], self.pin)]
            finally:  # asked for the next batch (or stopped): the copy of this one is queued
                self.ring.release(marker.seq)


def _identity(batch):
    return batch


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
        self.loader = WorkerLoader(dataset, self.batches, **loader_args)
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
            yield batch


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
        self.loader: WorkerLoader | None = None
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
            self.loader = WorkerLoader(ConcatDataset(self.datasets), self.sampler,
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
            yield next(self._batches)
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
