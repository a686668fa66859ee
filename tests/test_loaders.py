"""All epochs of an experience from one DataLoader pass: same batches per epoch, workers kept."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin
from test_cache import _config, photos  # noqa: F401 (fixture)

from benchmarks.images.cache import collate_images
from benchmarks.images.loaders import (
    BY_VALUE_BYTES,
    EpochBatches,
    EpochLoader,
    EvalPool,
    PinnedRing,
    WorkerLoader,
    _InRing,
)
from experiments.run import prepare, train_and_evaluate


def test_each_epoch_is_a_new_permutation_in_batches():
    batches = list(EpochBatches(10, 4, epochs=3, seed=7))
    assert [len(b) for b in batches] == [4, 4, 2] * 3  # the short last batch of each epoch
    epochs = [sum(batches[i:i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert batches == list(EpochBatches(10, 4, epochs=3, seed=7))  # seeded
    assert [len(b) for b in EpochBatches(10, 4, 2, drop_last=True)] == [4, 4] * 2
    assert sum(EpochBatches(5, 2, 2, shuffle=False), []) == [0, 1, 2, 3, 4] * 2


class Numbers(torch.utils.data.Dataset):
    def __init__(self, first: int = 0):
        self.first = first

    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int):
        return torch.tensor(self.first + i), torch.tensor(os.getpid())


def test_one_worker_pass_serves_every_epoch_and_more_if_asked():
    torch.manual_seed(0)
    loader = EpochLoader(Numbers(), epochs=2, batch_size=4, num_workers=1)
    assert len(loader) == 3  # batches per epoch, as the training loop counts them
    epochs = [[(int(x), int(pid)) for xs, pids in loader for x, pid in zip(xs, pids, strict=True)]
              for _ in range(3)]  # one epoch more than planned: a second pass
    assert all(sorted(x for x, _ in e) == list(range(9)) for e in epochs)
    # The planned epochs come from one worker process that never restarted in between.
    assert len({pid for e in epochs[:2] for _, pid in e}) == 1


class LoaderNames(SupervisedPlugin):
    """The type of `strategy.dataloader` as each training epoch starts and as it ends."""

    def __init__(self):
        super().__init__()
        self.before, self.after = [], []

    def before_training_epoch(self, strategy, **kwargs):
        self.before.append(type(strategy.dataloader).__name__)

    def after_training_epoch(self, strategy, **kwargs):
        self.after.append(type(strategy.dataloader).__name__)


class RingUse(SupervisedPlugin):
    """Whether each training epoch's and each evaluation's batches come from a pinned ring."""

    def __init__(self):
        super().__init__()
        self.train, self.eval = [], []

    def before_training_epoch(self, strategy, **kwargs):
        self.train.append(strategy.dataloader.loader.ring is not None)

    def before_eval_exp(self, strategy, **kwargs):
        self.eval.append(strategy.dataloader.pool.loader.ring is not None)


def test_training_with_workers_uses_one_pass_and_is_reproducible(photos, tmp_path):  # noqa: F811
    """Twice: the second time with the images written into a ring of shared slots (on a
    CUDA device the ring is pinned; here the CPU reads it), which gives the same matrix."""
    matrices = []
    for ring in (False, True):
        bench = prepare(_config(photos, "data.cache=true", "data.num_workers=1",
                                f"data.cache_dir={tmp_path / 'cache'}",
                                "eval.validation=false", "train.epochs=3"))
        seen, used = LoaderNames(), RingUse()
        bench.trainer.strategy.plugins += [seen, used]
        bench.trainer.strategy.pinned_ring = ring
        test, _ = train_and_evaluate(bench)
        assert seen.before == ["EpochLoader"] * 6  # 2 experiences x 3 epochs
        assert used.train == [ring] * 6 and used.eval == [ring] * 6  # 3 evaluations of 2
        matrices.append(test.matrix("srcc", "none"))
    assert np.isfinite(matrices[0]).all()
    assert np.array_equal(matrices[0], matrices[1])


class Pictures(torch.utils.data.Dataset):
    """Items as the image cache makes them: a uint8 (3, H, W) view of an H x W x 3 image
    (value: the item's number), and a score. Items in `odd` are one pixel taller."""

    collate_fn = staticmethod(collate_images)

    def __init__(self, first: int = 0, n: int = 9, odd: tuple[int, ...] = ()):
        self.first, self.n, self.odd = first, n, odd

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        value = self.first + i
        image = torch.full((6 + (i in self.odd), 5, 3), value % 256, dtype=torch.uint8)
        image[0, 0] = torch.tensor([value // 256, 1, 2])  # channels differ: a layout slip shows
        return image.permute(2, 0, 1), torch.tensor(float(value))


def _numbers(batches) -> list[int]:
    """Each image's number, checked against its score."""
    out = []
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.is_contiguous(memory_format=torch.channels_last)
        numbers = x[:, 0, 0, 0].long() * 256 + x[:, 0, 1, 1].long()
        assert torch.equal(numbers.float(), y) and (x[:, 1:, 0, 0] == torch.tensor([1, 2])).all()
        out += numbers.tolist()
    return out


def test_ring_batches_equal_the_plain_path():
    loaders = []
    for workers in (0, 1):
        torch.manual_seed(0)  # the same shuffles
        loaders.append(EpochLoader(Pictures(n=10), epochs=2, batch_size=4, num_workers=workers,
                                   ring=True))
    plain, ring = loaders
    assert ring.loader.ring is not None and len(ring.loader.ring.slots) == 2 * 1 + 2
    for _ in range(2):
        batches = [(x.clone(), y) for x, y in plain]
        assert [len(y) for _, y in batches] == [4, 4, 2]  # the short last batch too
        assert [torch.equal(a, b) for (a, _), (b, _) in zip(batches, ring, strict=True)] == \
            [True] * 3
    assert sorted(_numbers(ring)) == list(range(10))  # and as cache items are read


def test_a_lent_batch_stays_intact_while_the_workers_run_ahead():
    loader = WorkerLoader(Pictures(n=40), EpochBatches(40, 4, 1, shuffle=False),
                          collate_images, num_workers=1, ring=True)
    seen = []
    for x, y in loader:
        time.sleep(0.05)  # the worker builds every batch it is allowed to meanwhile
        seen += _numbers([(x, y)])
    assert seen == list(range(40))


def test_a_slot_is_handed_out_again_only_after_its_last_copy():
    ring = PinnedRing(3, (2, 4, 4, 3))
    ring.device = torch.device("cuda")  # as on a GPU, with fences that record their waits
    waited = []

    class Fence:
        def __init__(self, seq: int):
            self.seq = seq

        def synchronize(self) -> None:
            waited.append(self.seq)

    made = iter(range(100))
    ring.fence = lambda: Fence(next(made))
    numbers = [ring.claim([0]).seq for _ in range(3)]
    assert numbers == [0, 1, 2] and waited == []  # three free slots
    ring.lend(_InRing(0, 1))
    ring.release(0)
    assert ring.claim([0]).seq == 3 and waited == [0]  # slot 0 again: its copy waited for
    ring.lend(_InRing(1, 1))  # lent and not released: its slot cannot be handed out
    with pytest.raises(RuntimeError, match="slot 1 is still lent out"):
        ring.claim([0])


def test_images_of_another_size_bypass_the_ring():
    batches = EpochBatches(9, 4, 1, shuffle=False)
    loader = WorkerLoader(Pictures(odd=(4, 5, 6, 7)), batches, collate_images, num_workers=1,
                          ring=True)
    assert loader.ring.slots.shape[2:] == (6, 5, 3)  # shaped like the first item
    assert [tuple(x.shape[2:]) for x, _ in loader] == [(6, 5), (7, 5), (6, 5)]
    assert _numbers(loader) == list(range(9))


def test_eval_pool_with_a_ring_serves_every_pass_in_order():
    a, b, c = Pictures(0), Pictures(300, n=5), Pictures(600)
    pool = EvalPool(4, num_workers=1, ring=True)
    pool.add(a, a)
    pool.add(b, b)

    def one_pass(source, stop_after: int | None = None) -> list[int]:
        numbers = []
        for k, batch in enumerate(pool.batches(source, source)):
            if k == stop_after:
                break  # a caller that stops early
            numbers += _numbers([batch])
        return numbers

    assert one_pass(a) == list(range(9)) and one_pass(b) == list(range(300, 305))
    assert one_pass(b) == list(range(300, 305))  # out of order: the pass restarts at b
    assert one_pass(a, stop_after=1) == [0, 1, 2, 3] and one_pass(a) == list(range(9))
    assert one_pass(c) == list(range(600, 609))  # a new dataset: a new ring for all three
    assert pool.loader.ring is not None and one_pass(b) == list(range(300, 305))


def test_eval_pool_passes_over_each_dataset_with_one_set_of_workers():
    a, b, c = Numbers(0), Numbers(100), Numbers(200)
    pool = EvalPool(4, num_workers=1)
    pool.add(a, a)
    pool.add(b, b)

    def one_pass(source) -> tuple[list[int], set[int]]:
        batches = list(pool.batches(source, source))
        assert len(batches) == len(pool.batches(source, source)) == 3
        return [int(x) for xs, _ in batches for x in xs], {int(p) for _, ps in batches for p in ps}

    items_a, pids_a = one_pass(a)
    items_b, pids_b = one_pass(b)
    assert items_a == list(range(9)) and items_b == list(range(100, 109))  # in order
    assert pids_a == pids_b and len(pids_a) == 1  # and the same worker
    items_c, pids_c = one_pass(c)  # a new dataset: workers restart, holding all three
    assert items_c == list(range(200, 209)) and pids_c != pids_a
    assert one_pass(a)[1] == pids_c and len(pool.sources) == 3


class Marked(torch.utils.data.Dataset):
    """Leaves a file for each item a worker builds, so a test sees what was built ahead."""

    def __init__(self, folder, first: int, n: int = 8):
        self.folder, self.first, self.n = folder, first, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        (self.folder / str(self.first + i)).touch()
        return torch.tensor(self.first + i)


def _items(pool: EvalPool, source, stop_after: int | None = None) -> list[int]:
    out = []
    for k, xs in enumerate(pool.batches(source, source)):
        if k == stop_after:
            break  # a caller that stops early
        out += [int(x) for x in xs]
    return out


def test_eval_pool_builds_the_next_evaluation_while_the_current_one_runs(tmp_path):
    import time

    a, b = Marked(tmp_path, 0), Marked(tmp_path, 100)
    pool = EvalPool(4, num_workers=1)
    pool.add(a, a)
    pool.add(b, b)
    assert _items(pool, a) == list(range(8))
    deadline = time.monotonic() + 10
    while not (tmp_path / "100").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "100").exists()  # b's first batch was built before b was asked for
    assert _items(pool, b) == list(range(100, 108))
    assert _items(pool, a) == list(range(8))  # round again: a follows b


def test_eval_pool_serves_passes_out_of_order_and_after_an_early_stop(tmp_path):
    a, b, c = Marked(tmp_path, 0), Marked(tmp_path, 100), Marked(tmp_path, 200, n=0)
    pool = EvalPool(3, num_workers=1)
    for d in (a, b, c):
        pool.add(d, d)
    assert _items(pool, b) == list(range(100, 108))  # not the first: the pass restarts at b
    assert _items(pool, c) == [] and len(pool.batches(c, c)) == 0  # an empty test set
    assert _items(pool, b) == list(range(100, 108))  # b again, not a
    assert _items(pool, a, stop_after=1) == [0, 1, 2]
    assert _items(pool, a) == list(range(8))  # from its start, after the early stop
    assert _items(pool, b) == list(range(100, 108))
    workers = pool.loader.loader._iterator._workers
    assert len(workers) == 1 and workers[0].is_alive()  # one worker served all of it


def test_eval_pool_of_empty_datasets_yields_nothing(tmp_path):
    empty = Marked(tmp_path, 0, n=0)
    pool = EvalPool(3, num_workers=1)
    assert _items(pool, empty) == []


class Mixed(torch.utils.data.Dataset):
    """An image large enough for shared memory, small fields, a nested pair, a bfloat16."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        image = torch.full((3, 100, 100), i, dtype=torch.uint8)
        return image, torch.tensor(i / 8), (torch.tensor(i), torch.tensor(float(i)).bfloat16())


def test_worker_batches_arrive_as_the_collate_made_them():
    sampler = EpochBatches(8, 4, epochs=1, shuffle=False)
    plain = list(WorkerLoader(Mixed(), sampler))
    sent = list(WorkerLoader(Mixed(), sampler, num_workers=1))
    assert plain[0][0].nbytes > BY_VALUE_BYTES  # the image takes the shared-memory path

    def flat(batch) -> list:
        return [t for part in batch for t in (part if isinstance(part, list | tuple) else [part])]

    for a, b in zip(plain, sent, strict=True):
        assert [type(t) for t in b] == [type(t) for t in a]  # the nested pair stays a list
        for x, y in zip(flat(a), flat(b), strict=True):
            assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and torch.equal(x, y)


def test_small_channels_last_batches_keep_their_layout():
    from benchmarks.images.cache import collate_images

    class Thumbs(torch.utils.data.Dataset):  # small enough to go by value
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), torch.tensor(0.5)

    sampler = EpochBatches(4, 4, epochs=1, shuffle=False)
    (x, y), = WorkerLoader(Thumbs(), sampler, collate_images, num_workers=1)
    assert x.nbytes < BY_VALUE_BYTES and x.is_contiguous(memory_format=torch.channels_last)


def test_every_epoch_loader_goes_through_the_side_stream_copy_on_cuda(photos, tmp_path,  # noqa: F811
                                                                     monkeypatch):
    """On CUDA each epoch's loader, also one a plugin swapped in (replay), is wrapped for the
    epoch only. CPU here: the wrapper is replaced by one that records what it wrapped."""
    import experiments.template as template

    wrapped: list[str] = []

    class Recording:
        def __init__(self, batches, stream):
            wrapped.append(type(batches).__name__)
            self.batches = batches

        def __len__(self) -> int:
            return len(self.batches)

        def __iter__(self):
            return iter(self.batches)

    monkeypatch.setattr(template, "ImagesAhead", Recording)
    monkeypatch.setattr(template.torch.cuda, "Stream", lambda device: object())
    bench = prepare(_config(photos, "model.pretrained=false", "eval.validation=false",
                            "strategy.name=replay", "strategy.mem_size=8"))
    seen = LoaderNames()
    bench.trainer.strategy.plugins.append(seen)
    bench.trainer.strategy.copy_ahead = True
    train_and_evaluate(bench)
    # Before training, and after each of the 2 experiences: the stream's 2 test experiences.
    # Training: 2 epochs each; Avalanche's ReplayPlugin swaps in its own loader for the second.
    evals = ["DataLoader"] * 2
    assert wrapped == [*evals, *["TaskBalancedDataLoader"] * 2, *evals,
                       *["ReplayDataLoader"] * 2, *evals]
    assert seen.after == ["TaskBalancedDataLoader"] * 2 + ["ReplayDataLoader"] * 2  # restored


def test_a_ring_that_cannot_be_made_leaves_the_plain_path_with_one_warning(monkeypatch, caplog):
    def full(self):
        raise RuntimeError("unable to write to file </torch_1_2>: No space left on device (28)")

    monkeypatch.setattr(torch.Tensor, "share_memory_", full)
    loader = WorkerLoader(Pictures(), EpochBatches(9, 4, 1, shuffle=False), collate_images,
                          num_workers=1, ring=True)
    assert loader.ring is None
    assert [r.getMessage() for r in caplog.records] == [
        "batches go through shared memory, not a pinned ring: unable to write to file "
        "</torch_1_2>: No space left on device (28)"]
    monkeypatch.undo()  # the workers' batches use shared memory themselves
    assert _numbers(loader) == list(range(9))


@pytest.mark.parametrize("workers", [0, 1])
def test_an_evaluation_without_a_pool_gets_avalanches_batches_in_avalanches_order(
        photos, workers):  # noqa: F811
    # The template's loader skips Avalanche's multi-dataset sampler; the batches must not change.
    from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader

    bench = prepare(_config(photos, "model.pretrained=false", "eval.batch_size=5"))
    strategy = bench.trainer.strategy
    strategy.experience = bench.stream.benchmark.test_stream[1]
    strategy.eval_dataset_adaptation()
    strategy.make_eval_dataloader(num_workers=workers, persistent_workers=False)
    ours = list(strategy.dataloader)
    theirs = list(SingleDatasetDataLoader(strategy.adapted_dataset, batch_size=5,
                                          num_workers=workers))
    assert len(ours) == len(theirs) == -(-len(strategy.adapted_dataset) // 5) > 1
    for a, b in zip(ours, theirs, strict=True):
        assert len(a) == len(b) == 4  # image, score, row, task label
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
