"""The GPU rows: ResNet18 bf16 through `iqacl run`'s loop on a CUDA card, against bare PyTorch.

Run on a lent CUDA machine (`python -m perf --gpu --json docs/perf_gpu.json`);
`make perf` folds that file into the report. `--gpu --tiny` runs the same code
on the CPU at tiny sizes, so it is checked before a card is lent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .ewc import WithTask, fisher_times
from .report import git
from .timing import Row, best, photo_config, side_by_side, sync

GPU_SIZES = {"full": {"photos": 256, "copies": 48, "epochs": 5, "batch": 256, "size": 224,
                      "ewc": 64},
             "tiny": {"photos": 8, "copies": 2, "epochs": 2, "batch": 4, "size": 48, "ewc": 2}}


def gpu_rows(work: Path, photos: int, copies: int, epochs: int, batch: int, size: int,
             ewc: int) -> dict:
    """ResNet18 bf16: `iqacl run`'s loop from the image cache vs synthetic on-device tensors.

    Also: the nvJPEG path (`data.decode=gpu`) and EWC's per-sample importance on the card.
    Runs on the CPU too (tiny sizes), to check the code before a GPU is lent.
    """
    from benchmarks.demo.eva_ava import make_demo_data
    from experiments.run import prepare
    from models import IQALoss, build_model

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = work / "gpu"
    make_demo_data(root, n_ava=photos, n_eva=2, size=(500, 375))
    labels, images = root / "labels.csv", root / "many"
    images.mkdir()
    with open(labels, "w") as fh:
        fh.write("image_id,score\n")
        for f in sorted((root / "AVA" / "images").glob("*.jpg")):
            for c in range(copies):  # distinct files (the cache decodes each), same pixels
                os.link(f, images / f"{f.stem}_{c}.jpg")
                fh.write(f"{f.stem}_{c},{int(f.stem) % 9 + 1}\n")
    workers = max(2, (os.cpu_count() or 4) - 2)

    def trainer(*extra: str):
        config = photo_config(root, work / "gpu-cache", f"data.image_size={size}",
                              f"train.batch_size={batch}", f"eval.batch_size={batch}",
                              f"train.epochs={epochs}", "train.amp=true",
                              "model.backbone=resnet18", f"data.num_workers={workers}",
                              *extra)
        config["stream"] = [{"name": "photos", "format": "csv", "root": str(root),
                             "labels": str(labels), "scale": [1, 10], "test_fraction": 0.25,
                             "columns": None, "delimiter": None, "split_by": None,
                             "official_split": False}]
        started = time.perf_counter()
        bench = prepare(config)
        return bench, time.perf_counter() - started

    def train_rate(bench) -> tuple[list[float], int]:
        """Images/s of each steady epoch: after the first two (workers warm, cudnn tuned)."""
        epoch_times = _epoch_timer(dev)
        bench.trainer.strategy.plugins.append(epoch_times)
        exp = bench.stream.benchmark.train_stream[0]
        bench.trainer.train(exp)
        steady = epoch_times.seconds[2:] or epoch_times.seconds[1:]
        return [len(exp.dataset) / s for s in steady], len(exp.dataset)

    bench, fill_s = trainer()
    strategy = bench.trainer.strategy
    # The run's own setting: a pinned ring on CUDA (forced on the CPU, so --tiny runs it too).
    ring = None if dev.type == "cuda" else True
    strategy.pinned_ring = ring
    ours, n = train_rate(bench)
    strategy.pinned_ring = False
    plain_train, _ = train_rate(bench)
    strategy.pinned_ring = ring
    loader_alone = _loader_rate(bench, batch, workers, dev)
    test = bench.stream.benchmark.test_stream
    n_test = len(test[0].dataset)
    # Each timing runs evaluations back to back for more batches than a pool builds ahead
    # (2 per worker) while it waits: what a long test set (AVA's 20k images) sustains.
    passes = -(-4 * workers * batch // n_test) if dev.type == "cuda" else 1
    evaluated = f"{n_test} images x {passes} evaluations back to back"

    def evaluate(ahead: bool = True, pinned_ring: bool | None = ring) -> Callable[[], dict]:
        def go() -> dict:  # images copied on a side stream (the run's way) or Avalanche's
            strategy.copy_ahead = ahead and dev.type == "cuda"
            strategy.pinned_ring = pinned_ring
            return [bench.trainer.evaluate(test) for _ in range(passes)][-1]
        return go

    # Each also warms up (the plain ring-less path gets a pool of its own).
    runs = evaluate()(), evaluate(ahead=False)(), evaluate(pinned_ring=False)()
    ahead = side_by_side(evaluate(), evaluate(ahead=False), 3)
    ring_turns = side_by_side(evaluate(), evaluate(pinned_ring=False), 3)
    ours_eval, _ = ahead.rates(n_test * passes)
    strategy.copy_ahead, strategy.pinned_ring = dev.type == "cuda", ring  # the run's own again
    eval_loader_alone = _eval_loader_rate(bench, test[0], dev, passes)
    nvjpeg, _ = train_rate(trainer("data.cache=false", "data.decode=gpu")[0])
    med = lambda v: float(np.median(v))  # noqa: E731

    model = build_model("resnet18").to(dev).to(memory_format=torch.channels_last)
    opt, loss_fn = torch.optim.Adam(model.parameters(), 3e-4), IQALoss(0.1, 0.1)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(
        memory_format=torch.channels_last)
    y = torch.rand(batch, device=dev) * 2 - 1

    def bare(steps: int, train: bool) -> float:
        sync(dev)
        t = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                if train:
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(x).float(), y).backward()
                    opt.step()
                else:
                    with torch.no_grad():
                        model(x)
        sync(dev)
        return steps * batch / (time.perf_counter() - t)

    steps = 40 if dev.type == "cuda" else 2
    bare(steps // 4, True)
    bare_train = med([bare(steps, True) for _ in range(3)])
    model.eval()
    bare(steps // 4, False)
    bare_eval = med([bare(steps, False) for _ in range(3)])

    from benchmarks.features import FeatureRows
    data = FeatureRows(torch.randint(0, 256, (ewc, 3, size, size), dtype=torch.uint8),
                       torch.rand(ewc) * 2 - 1)
    data = WithTask(data)
    fisher, fisher_floor = fisher_times(model, data, dev, 2)
    fisher_bound = med(fisher.slow) / fisher_floor
    per_epoch = "median of epochs 3-" + str(epochs)
    setting = f"{size} px, batch {batch}, {workers} loader workers"
    return {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "cpu_cores": os.cpu_count(),
        "command": "python -m perf --gpu --json docs/perf_gpu.json",
        "commit": git("describe", "--always", "--dirty", "--abbrev=7"),
        "rows": [asdict(r) for r in (
            Row("ResNet18 bf16 training: `iqacl run` from the image cache vs bare PyTorch on "
                "synthetic on-device tensors", med(ours), bare_train, "images/s", 0.8,
                samples=[r / bare_train for r in ours],
                note=f"{n} images, {setting}, {per_epoch}; cache filled in {fill_s:.0f} s"),
            Row("the training loader alone (the image cache, no model) vs bare PyTorch's "
                "training rate", loader_alone, bare_train, "images/s", None,
                note=f"{setting}, steady state: what the loop could reach if the model cost "
                     "nothing"),
            Row("ResNet18 bf16 evaluation: `iqacl run` from the image cache vs bare PyTorch on "
                "synthetic on-device tensors", ours_eval, bare_eval, "images/s", 0.8,
                samples=[n_test * passes / t / bare_eval for t in ahead.fast],
                note=f"{evaluated}, {setting}, 3 rounds"),
            Row("the evaluation loader alone (the run's worker pool, no model) vs bare PyTorch's "
                "evaluation rate", eval_loader_alone, bare_eval, "images/s", None,
                note=f"{evaluated}, {setting}, best of 3: what evaluation could reach if "
                     "the model cost nothing"),
            ahead.row("evaluation with each batch's images copied on a side stream vs on the "
                      "compute stream (Avalanche's)", n_test * passes, "images/s", None,
                      note=f"{evaluated}, {setting}, 3 rounds timed in turns; predictions "
                           f"{_identical(runs[0], runs[1])}"),
            Row("training with the workers' images written into a pinned ring vs sent as new "
                "shared memory and pinned by the loader (PyTorch's way)", med(ours),
                med(plain_train), "images/s", None, note=f"{n} images, {setting}, {per_epoch}"),
            ring_turns.row("evaluation with the workers' images written into a pinned ring vs "
                           "sent as new shared memory and pinned by the loader (PyTorch's way)",
                           n_test * passes, "images/s", None,
                           note=f"{evaluated}, {setting}, 3 rounds timed in turns; "
                                f"predictions {_identical(runs[0], runs[2])}"),
            Row("ResNet18 bf16 training with nvJPEG (`data.decode=gpu`, no cache) vs bare "
                "PyTorch", med(nvjpeg), bare_train, "images/s", None,
                note=f"{n} images, {setting}, {per_epoch}"),
            fisher.row("EWC per-sample importance on the GPU, ResNet18: vmap vs loop", ewc,
                       "samples/s", 5.0, bound=fisher_bound,
                       note=f"{ewc} samples, {size} px, fp32, 2 rounds in turns; one batched "
                            f"forward + backward alone: {fisher_bound:.1f}× the loop"),
        )],
    }


def _identical(a: dict, b: dict) -> str:
    """Whether two evaluations' predictions ({experience: (rows, targets, preds)}) match."""
    same = all(np.array_equal(x[2], y[2]) for x, y in zip(a.values(), b.values(), strict=True))
    return "identical" if same else "DIFFER"


def _loader_rate(bench, batch: int, workers: int, dev: torch.device) -> float:
    """Images/s out of the run's kind of training loader (same dataset, collate, workers,
    pinned memory, epochs in one pass), copied to the device: the data path's ceiling."""
    from benchmarks.images.loaders import EpochLoader

    data = bench.stream.benchmark.train_stream[0].dataset.train()
    loader = EpochLoader(data, epochs=3, batch_size=batch, num_workers=workers,
                         pin_memory=dev.type == "cuda", device=dev,
                         ring=bench.trainer.strategy.pinned_ring)

    _to_device(loader, dev)  # workers start
    return len(data) / best(lambda: _to_device(loader, dev), 2)


def _eval_loader_rate(bench, exp, dev: torch.device, passes: int) -> float:
    """Images/s of passes over `exp` from the run's own evaluation pool, copied to the device
    (`passes` back to back per timing)."""
    strategy = bench.trainer.strategy
    (pool,) = [p for key, p in strategy.eval_pools.items() if ("ring", strategy.pinned_ring) in key]

    def one_pass() -> None:
        for _ in range(passes):
            _to_device(pool.batches(exp.dataset, exp.dataset.eval()), dev)
    one_pass()
    return len(exp.dataset) * passes / best(one_pass, 3)


def _to_device(batches, dev: torch.device) -> None:
    """Each batch's images copied to the device, as a loop would before its forward."""
    for x, *_ in batches:
        x.to(dev, non_blocking=True)
    sync(dev)


def _epoch_timer(dev: torch.device):
    from avalanche.core import SupervisedPlugin

    class EpochTimer(SupervisedPlugin):
        """Each training epoch's wall time, the GPU synchronised at both ends."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._t = 0.0

        def before_training_epoch(self, strategy, **kwargs) -> None:
            sync(dev)
            self._t = time.perf_counter()

        def after_training_epoch(self, strategy, **kwargs) -> None:
            sync(dev)
            self.seconds.append(time.perf_counter() - self._t)

    return EpochTimer()
