"""The data path and the training loop: loaders, `iqacl run`'s loop, a frozen backbone."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .timing import Row, photo_config, side_by_side


def loader_rows(root: Path, cache_dir: Path, workers: int, rounds: int = 6) -> list[Row]:
    """Images/s out of the DataLoader: from the cache vs Pillow decode + torchvision."""
    from torch.utils.data import DataLoader

    from benchmarks.images.cache import ImageCache, eval_resize
    from benchmarks.stream import build_stream

    entries = [{"name": "AVA", "format": "ava", "root": str(root / "AVA")}]
    plain = build_stream(entries, image_size=224).benchmark.train_stream[0].dataset
    cache = ImageCache(cache_dir, eval_resize(224), workers=workers)
    started = time.perf_counter()
    cached = build_stream(entries, image_size=224, cache=cache).benchmark.train_stream[0].dataset
    build_s = time.perf_counter() - started  # fills the cache: decodes every image once

    def one_pass(ds) -> Callable[[], None]:
        # Steady state, as in a run's later epochs: workers started, first pass not timed.
        loader = DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=ds.collate_fn,
                            persistent_workers=workers > 0)
        def go() -> None:
            for _ in loader:  # each batch dropped before the next, as a training loop does
                pass
        go()
        return go

    rows = []
    for mode in ("train", "eval"):
        turns = side_by_side(one_pass(getattr(cached, mode)()), one_pass(getattr(plain, mode)()),
                             rounds=rounds, fast_repeats=3)
        rows.append(turns.row(
            f"loader, {mode} transforms: image cache vs Pillow → torchvision", len(plain),
            "images/s", 10.0,
            note=f"{len(plain)} AVA-sized JPEGs at 224 px, {workers} workers, steady state, "
                 f"{rounds} rounds timed in turns (the cache's side: best of 3 passes a round)"))
    rows[0].note += f"; filling the cache took {build_s:.1f} s ({len(plain) / build_s:.0f}/s)"
    return rows


def loop_rows(root: Path, cache_dir: Path, size: int, train_rounds: int = 7,
              eval_rounds: int = 11) -> list[Row]:
    """The runner's Avalanche loop vs a bare PyTorch loop: same model, data, batch, transforms."""
    from torch.utils.data import DataLoader

    from benchmarks.images.cache import CachedImages, ImageCache, collate_images, eval_resize
    from benchmarks.metrics import srcc
    from benchmarks.stream import image_transforms
    from experiments.run import prepare
    from models import IQALoss

    config = photo_config(root, cache_dir, f"data.image_size={size}", "train.epochs=2")
    bench = prepare(config)
    exp, data = bench.stream.benchmark.train_stream[1], bench.stream.experiences[1]
    model0 = copy.deepcopy(bench.trainer.strategy.model)
    shard = ImageCache(cache_dir, eval_resize(size)).shard(data.table["file"].tolist())
    tfs = image_transforms(size, config["data"]["crop_scale"], cached=True)

    def plain(part: str, tf):
        rows = data.part(part)
        base = CachedImages(shard, data.table.index.get_indexer(rows.index),
                            data.normalise(rows["score"].to_numpy()))
        return Transformed(base, tf)

    # Evaluation runs over the training images (eval transforms): the test part is small
    # enough here that the per-call setup of any evaluation would dominate the rate.
    train_ds, test_ds = plain("train", tfs["train"]), plain("train", tfs["eval"])
    bs, epochs, dev = config["train"]["batch_size"], config["train"]["epochs"], bench.device

    # Like the trainer's, the bare loop's model and optimiser persist across the repeats.
    bare_model = copy.deepcopy(model0).to(dev)
    opt = torch.optim.Adam(bare_model.parameters(), lr=config["train"]["lr"])
    loss_fn = IQALoss(config["loss"]["ranking_weight"], config["loss"]["margin"])

    def bare_train() -> None:
        bare_model.train()
        for _ in range(epochs):
            for x, y, _ in DataLoader(train_ds, batch_size=bs, shuffle=True,
                                      collate_fn=collate_images):
                opt.zero_grad()
                loss_fn(bare_model(x.to(dev)), y.to(dev)).backward()
                opt.step()

    @torch.no_grad()
    def bare_eval() -> None:
        bare_model.eval()
        preds, ys = [], []
        for x, y, _ in DataLoader(test_ds, batch_size=config["eval"]["batch_size"],
                                  collate_fn=collate_images):
            preds.append(bare_model(x.to(dev)).cpu())
            ys.append(y)
        srcc(torch.cat(ys).numpy(), torch.cat(preds).numpy())

    test_exp = bench.stream.benchmark.train_stream[1:2]
    train = side_by_side(lambda: bench.trainer.train(exp), bare_train, train_rounds)
    evaluation = side_by_side(lambda: bench.trainer.evaluate(test_exp), bare_eval, eval_rounds)
    n_train, n_test = len(train_ds) * epochs, len(test_ds)
    note = (f"mobilenet_v2 at {size} px, batch {bs}, CPU, {train_rounds} (training) and "
            f"{eval_rounds} (evaluation) rounds timed in turns, same collate (channels-last); "
            f"{n_train // epochs} images, evaluated with the eval transforms")
    return [
        train.row("training loop: `iqacl run` (Avalanche) vs bare PyTorch", n_train,
                  "images/s", 0.95, note=note),
        evaluation.row("evaluation loop: `iqacl run` (Avalanche) vs bare PyTorch", n_test,
                       "images/s", 0.95, note=note),
    ]


class Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y, row = self.base[i]
        return self.transform(x), y, row


def feature_rows(root: Path, cache_dir: Path, size: int, epochs: int, work: Path,
                 rounds: int = 3) -> list[Row]:
    """A whole frozen-backbone (linear probe) run, with and without cached features."""
    from experiments.run import run, stream_from_config

    common = [f"data.image_size={size}", f"train.epochs={epochs}",
              "model.freeze_backbone=true"]
    stream_from_config(photo_config(root, cache_dir, *common))  # fill the image cache first
    results = {}

    def one(flag: str) -> Callable[[], None]:
        def go() -> None:
            out = work / f"probe-{flag}-{time.monotonic_ns()}"
            config = photo_config(root, cache_dir, *common, f"model.cache_features={flag}")
            results[flag] = run(config, out)
        return go

    turns = side_by_side(one("true"), one("false"), rounds)
    a, b = (np.array(results[k]["matrices"]["srcc"], dtype=float) for k in ("true", "false"))
    diff = float(np.nanmax(np.abs(a - b)))
    fast, slow = (float(np.median(t)) for t in (turns.fast, turns.slow))
    return [turns.row("frozen-backbone stream run: cached features vs none", 1, "runs/s", 10.0,
                      note=f"{fast:.1f} s vs {slow:.1f} s (medians of {rounds} rounds in turns); "
                           f"mobilenet_v2 at {size} px, {epochs} epochs, both from the image "
                           f"cache; SRCC matrices differ by {diff:.1e} (tolerance 1e-5)"
                           + ("" if diff <= 1e-5 else " FAILED"))]

