"""`make perf`: where the time goes, as ratios against baselines measured in the same run.

Every row times the suite's path and a baseline on the same machine, in the
same process run, and writes docs/PERFORMANCE.md (`--tiny`: small sizes, for
the test). On a CUDA machine `--gpu` measures the GPU rows instead and writes
them as JSON; `make perf` folds that file (docs/perf_gpu.json) into the report.

    python -m experiments.perf [--tiny] [--out docs/PERFORMANCE.md]
    python -m experiments.perf --gpu --json docs/perf_gpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    what: str
    figure: float
    baseline: float
    unit: str
    target: float | None  # the ratio to reach (figure / baseline), or an absolute bound
    higher_is_better: bool = True
    absolute: bool = False  # target bounds the figure itself, not the ratio
    note: str = ""
    # The highest ratio any method could reach here, measured in the same run; a target
    # above it is out of reach on this machine, and the row says so instead of pass/fail.
    bound: float | None = None

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")

    @property
    def passed(self) -> bool | None:
        if self.target is None or (self.bound is not None and self.bound < self.target):
            return None
        value = self.figure if self.absolute else self.ratio
        return value >= self.target if self.higher_is_better else value < self.target


SIZES = {
    # photos: AVA-sized JPEGs; probe_epochs: the linear probe's epochs.
    "full": {"photos": 480, "loop_size": 64, "probe_size": 128, "probe_epochs": 30,
             "ewc_samples": 48, "ewc_size": 128, "ava_lines": 255_530, "eva_images": 4_070,
             "eva_votes": 137_000, "demo": (600, 360)},
    "tiny": {"photos": 40, "loop_size": 48, "probe_size": 48, "probe_epochs": 2,
             "ewc_samples": 4, "ewc_size": 48, "ava_lines": 2_000, "eva_images": 100,
             "eva_votes": 3_000, "demo": (40, 20)},
}


def best(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls: the least disturbed by other work."""
    return min(timed(fn) for _ in range(repeats))


def side_by_side(fast: Callable[[], object], slow: Callable[[], object], rounds: int,
                 fast_repeats: int = 1) -> tuple[float, float]:
    """Best seconds of each side, timed in turns so that a slow spell of a shared machine
    falls on both sides rather than on one ratio's numerator."""
    a, b = [], []
    for _ in range(rounds):
        a += [timed(fast) for _ in range(fast_repeats)]
        b.append(timed(slow))
    return min(a), min(b)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Peak RSS of the calling process, for child code. /proc's VmHWM starts afresh at exec;
# getrusage's ru_maxrss would carry over the (large) parent's peak on Linux.
PEAK_MB = ("(lambda s: int(s.split('VmHWM:')[1].split()[0]) / 1024)"
           "(open('/proc/self/status').read())")


def child(code: str, timeout: float = 600) -> dict:
    """Run Python code in a fresh interpreter; it prints one JSON line last."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"measurement in a child process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def photo_config(root: Path, cache_dir: Path, *extra: str) -> dict:
    from experiments.config import load_config

    return load_config(None, [
        f"stream=[{{name: EVA, format: eva, root: '{root / 'EVA'}'}}, "
        f"{{name: AVA, format: ava, root: '{root / 'AVA'}'}}]",
        "model.pretrained=false", "log.progress=false", "log.plots=false", "log.csv=false",
        "eval.validation=false", "data.cache=true", f"data.cache_dir={cache_dir}", *extra])


# -- rows ----------------------------------------------------------------------------------
def loader_rows(root: Path, cache_dir: Path, workers: int) -> list[Row]:
    """Images/s out of the DataLoader: from the cache vs Pillow decode + torchvision."""
    from torch.utils.data import DataLoader

    from benchmarks.cache import ImageCache, eval_resize
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
        fast, slow = side_by_side(one_pass(getattr(cached, mode)()),
                                  one_pass(getattr(plain, mode)()), rounds=6, fast_repeats=3)
        rows.append(Row(f"loader, {mode} transforms: image cache vs Pillow → torchvision",
                        len(plain) / fast, len(plain) / slow, "images/s", 10.0,
                        note=f"{len(plain)} AVA-sized JPEGs at 224 px, {workers} workers, "
                             "steady state, best passes, timed in turns"))
    rows[0].note += f"; filling the cache took {build_s:.1f} s ({len(plain) / build_s:.0f}/s)"
    return rows


def loop_rows(root: Path, cache_dir: Path, size: int) -> list[Row]:
    """The runner's Avalanche loop vs a bare PyTorch loop: same model, data, batch, transforms."""
    from torch.utils.data import DataLoader

    from benchmarks.cache import CachedImages, ImageCache, collate_images, eval_resize
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
        return _Transformed(base, tf)

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
    # Rounds: a shared VM's speed moves by 10-30% from minute to minute; the best of
    # many turns is what each side costs when it is left alone.
    train_rounds, eval_rounds = 7, 11
    av_train, bare_t = side_by_side(lambda: bench.trainer.train(exp), bare_train, train_rounds)
    av_eval, bare_e = side_by_side(lambda: bench.trainer.evaluate(test_exp), bare_eval,
                                   eval_rounds)
    n_train, n_test = len(train_ds) * epochs, len(test_ds)
    note = (f"mobilenet_v2 at {size} px, batch {bs}, CPU, best of {train_rounds} (training) and "
            f"{eval_rounds} (evaluation) timed in turns, same collate (channels-last); "
            f"{n_train // epochs} images, evaluated with the eval transforms")
    return [
        Row("training loop: `iqacl run` (Avalanche) vs bare PyTorch", n_train / av_train,
            n_train / bare_t, "images/s", 0.95, note=note),
        Row("evaluation loop: `iqacl run` (Avalanche) vs bare PyTorch", n_test / av_eval,
            n_test / bare_e, "images/s", 0.95, note=note),
    ]


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y, row = self.base[i]
        return self.transform(x), y, row


def feature_rows(root: Path, cache_dir: Path, size: int, epochs: int,
                 work: Path) -> list[Row]:
    """A whole frozen-backbone (linear probe) run, with and without cached features."""
    from experiments.run import run, stream_from_config

    common = [f"data.image_size={size}", f"train.epochs={epochs}",
              "model.freeze_backbone=true"]
    stream_from_config(photo_config(root, cache_dir, *common))  # fill the image cache first
    results = {}

    def one(flag: str) -> float:
        out = work / f"probe-{flag}-{time.monotonic_ns()}"
        config = photo_config(root, cache_dir, *common, f"model.cache_features={flag}")
        t = timed(lambda: results.__setitem__(flag, run(config, out)))
        return t

    slow, fast = one("false"), one("true")
    a, b = (np.array(results[k]["matrices"]["srcc"], dtype=float) for k in ("true", "false"))
    diff = float(np.nanmax(np.abs(a - b)))
    return [Row("frozen-backbone stream run: cached features vs none", 1 / fast, 1 / slow,
                "runs/s", 10.0,
                note=f"{fast:.1f} s vs {slow:.1f} s; mobilenet_v2 at {size} px, {epochs} "
                     f"epochs, both from the image cache; SRCC matrices differ by "
                     f"{diff:.1e} (tolerance 1e-5)" + ("" if diff <= 1e-5 else " FAILED"))]


def ewc_rows(root: Path, cache_dir: Path, n: int, size: int) -> list[Row]:
    """Per-sample EWC importance: vmap over per-sample gradients vs a Python loop."""
    from benchmarks.features import FeatureRows
    from models import build_model
    from strategies.fisher import per_sample_fisher, per_sample_fisher_loop

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    images = FeatureRows(torch.randint(0, 256, (n, 3, size, size), generator=g,
                                       dtype=torch.uint8), torch.rand(n, generator=g) * 2 - 1)
    rows = []
    for label, model, data in (
        (f"full model (mobilenet_v2, {size} px)", build_model("mobilenet_v2"), images),
        ("linear probe (head on cached features)",
         build_model("mobilenet_v2", freeze_backbone=True),
         FeatureRows(torch.randn(n * 8, 1280, generator=g), torch.rand(n * 8, generator=g))),
    ):
        data = _WithTask(data)
        fast, slow, floor = fisher_times(model, data, cpu, 3)
        # Equality of the two computations, in float64 where rounding cannot hide a mistake.
        m64, sub = copy.deepcopy(model).double(), _WithTask(data.base, 4, torch.float64)
        a, b = per_sample_fisher(m64, sub, cpu, 4), per_sample_fisher_loop(m64, sub, cpu)
        diff = max((a[k].data - b[k].data).abs().max().item() for k in a)
        rows.append(Row(f"EWC per-sample importance, {label}: vmap vs loop", len(data) / fast,
                        len(data) / slow, "samples/s", 5.0, bound=slow / floor,
                        note=f"{len(data)} samples, batch 32, CPU; float64 max |Δ| {diff:.1e} "
                             "(tolerance 1e-5)" + ("" if diff < 1e-5 else " FAILED") +
                             f"; one batched forward + backward alone: {slow / floor:.2f}× "
                             "the loop"))
    return rows


def fisher_times(model: torch.nn.Module, data, dev: torch.device,
                 rounds: int) -> tuple[float, float, float]:
    """Seconds of per-sample EWC importance by vmap and by the loop (timed in turns), and of
    one batched forward + backward pass: the least any per-sample method must run."""
    from strategies.fisher import per_sample_fisher, per_sample_fisher_loop

    fast, slow = side_by_side(lambda: (per_sample_fisher(model, data, dev, 32), _sync(dev)),
                              lambda: (per_sample_fisher_loop(model, data, dev), _sync(dev)),
                              rounds)
    return fast, slow, best(lambda: _forward_backward(model, data, 32, dev), rounds)


def _forward_backward(model: torch.nn.Module, data, batch_size: int,
                      dev: torch.device = torch.device("cpu")) -> None:
    """The plain training step's gradient over the same samples: no per-sample anything."""
    model.eval()
    for x, y, _, _ in torch.utils.data.DataLoader(data, batch_size=batch_size):
        model.zero_grad()
        ((model(x.to(dev)).reshape(-1) - y.to(dev)) ** 2).sum().backward()
    model.zero_grad()
    _sync(dev)


class _WithTask(torch.utils.data.Dataset):
    def __init__(self, base, limit: int | None = None, dtype=None):
        self.base, self.limit, self.dtype = base, limit, dtype

    def __len__(self) -> int:
        return min(len(self.base), self.limit or len(self.base))

    def __getitem__(self, i: int):
        x, y, row = self.base[i]
        if self.dtype is not None:
            x = (x.float() / 255 if x.dtype == torch.uint8 else x).to(self.dtype)
            y = y.to(self.dtype)
        return x, y, row, 0


def stream_rows(work: Path, ava_lines: int, eva_images: int, eva_votes: int) -> list[Row]:
    """Building the stream from full-size label files and an image folder of that many files."""
    root = make_full_size_dataset(work / "full", ava_lines, eva_images, eva_votes)
    ava, eva = str(root / "AVA"), str(root / "EVA")
    # Two processes, so the baseline's reading does not count in the build's peak memory.
    floor = child(f"""
import json, os, time
import pandas as pd
t = time.perf_counter()
pd.read_csv({ava + '/AVA.txt'!r}, sep=' ', header=None)
pd.read_csv({eva + '/data/votes_filtered.csv'!r}, sep='=')
n = sum(1 for _ in os.scandir({ava + '/images'!r}))
print(json.dumps({{"s": time.perf_counter() - t}}))
""")
    r = child(f"""
import json, time
from benchmarks.stream import build_stream
rss0 = {PEAK_MB}
t = time.perf_counter()
s = build_stream([{{"name": "EVA", "format": "eva", "root": {eva!r}}},
                  {{"name": "AVA", "format": "ava", "root": {ava!r}}}])
took = time.perf_counter() - t
print(json.dumps({{"took": took, "rss0": rss0, "rss": {PEAK_MB},
                  "counts": [len(e.table) for e in s.experiences]}}))
""")
    r["floor"] = floor["s"]
    note = (f"{ava_lines:,} AVA lines, {eva_votes:,} EVA votes, {sum(r['counts']):,} image "
            "files (hard links to one JPEG)")
    return [
        Row("building the stream from full-size label files (< 5 s)", r["took"], r["floor"],
            "s", 5.0, higher_is_better=False, absolute=True,
            note=note + "; baseline: pandas reading the two label files + listing the folder"),
        Row("peak memory building that stream (< 1 GB)", r["rss"], r["rss0"], "MB", 1024.0,
            higher_is_better=False, absolute=True,
            note="baseline: the same process after importing torch and Avalanche"),
    ]


def make_full_size_dataset(root: Path, ava_lines: int, eva_images: int,
                           eva_votes: int) -> Path:
    """Label files the size of the real ones; every image a hard link to one small JPEG."""
    from PIL import Image

    from benchmarks.demo_data import write_ava_labels, write_eva_labels

    rng = np.random.default_rng(0)
    ids = np.arange(1, ava_lines + 1) * 3 + 100_000
    counts = rng.integers(0, 40, size=(ava_lines, 10))
    rows = [[i + 1, int(k), *c.tolist(), 1, 2, 5] for i, (k, c) in enumerate(zip(ids, counts,
                                                                                strict=True))]
    write_ava_labels(root / "AVA", rows, ids[-(ava_lines // 13):])  # EVA ids are not among them
    eva_ids = ids[:eva_images]
    votes = [[int(eva_ids[i % eva_images]), i, int(rng.integers(0, 11)), 1, 2, 3, 4, 5,
              "2019-01-10 10:10:00", 0, 1, 0, 1] for i in range(eva_votes)]
    write_eva_labels(root / "EVA", votes, [(int(k), 1 + int(k) % 6) for k in eva_ids])
    one = root / "one.jpg"
    Image.new("RGB", (64, 48), (90, 120, 150)).save(one, quality=90)
    made = 0
    for folder, keys in ((root / "AVA" / "images", ids),
                         (root / "EVA" / "images" / "EVA_together", eva_ids)):
        folder.mkdir(parents=True, exist_ok=True)
        for k in keys:
            if made % 60_000 == 0:  # ext4 allows 65,000 links to one file
                source = root / f"one-{made}.jpg"
                shutil.copyfile(one, source)
            os.link(source, folder / f"{k}.jpg")
            made += 1
    return root


def cli_rows() -> list[Row]:
    """`iqacl --help` wall time against importing what it avoids (torch and Avalanche)."""
    def wall(args: list[str]) -> float:
        return best(lambda: subprocess.run([sys.executable, *args], cwd=ROOT,
                                           capture_output=True, check=True), 3)

    helps = wall(["-m", "experiments.cli", "--help"])
    heavy = wall(["-c", "import torch, avalanche.training"])
    return [Row("`iqacl --help` wall time (< 1.5 s)", helps, heavy, "s", 1.5,
                higher_is_better=False, absolute=True,
                note="baseline: `import torch, avalanche.training` alone")]


def demo_rss_rows(work: Path, n_ava: int, n_eva: int) -> list[Row]:
    """Peak memory of a demo-sized run (`iqacl run`, one epoch per experience)."""
    from benchmarks.demo_data import make_demo_data

    data = work / "demo"
    make_demo_data(data, n_ava=n_ava, n_eva=n_eva)
    args = ["experiments/configs/demo.yaml", "--out", str(work / "demo-run"),
            f"stream.EVA.root={data / 'EVA'}", f"stream.AVA.root={data / 'AVA'}",
            "train.epochs=1", "log.progress=false", "model.pretrained=false"]
    run = child(f"""
import json, time
from experiments.cli import main
t = time.perf_counter()
main(["run", *{args!r}])
print(json.dumps({{"rss": {PEAK_MB}, "s": time.perf_counter() - t}}))
""")
    floor = child(f"""
import json
import experiments.run, strategies
print(json.dumps({{"rss": {PEAK_MB}}}))
""")
    return [Row("peak memory of a demo-sized run (reported)", run["rss"], floor["rss"], "MB",
                None, higher_is_better=False,
                note=f"{n_ava} AVA + {n_eva} EVA images at 128 px, 1 epoch, {run['s']:.0f} s; "
                     "baseline: the process after its imports")]


# -- GPU -----------------------------------------------------------------------------------
GPU_SIZES = {"full": {"photos": 256, "copies": 48, "epochs": 5, "batch": 256, "size": 224,
                      "ewc": 64},
             "tiny": {"photos": 8, "copies": 2, "epochs": 2, "batch": 4, "size": 48, "ewc": 2}}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def gpu_rows(work: Path, photos: int, copies: int, epochs: int, batch: int, size: int,
             ewc: int) -> dict:
    """ResNet18 bf16: `iqacl run`'s loop from the image cache vs synthetic on-device tensors.

    Also: the nvJPEG path (`data.decode=gpu`) and EWC's per-sample importance on the card.
    Runs on the CPU too (tiny sizes), to check the code before a GPU is lent.
    """
    from benchmarks.demo_data import make_demo_data
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

    def train_rate(bench) -> tuple[float, int]:
        epoch_times = _epoch_timer(dev)
        bench.trainer.strategy.plugins.append(epoch_times)
        exp = bench.stream.benchmark.train_stream[0]
        bench.trainer.train(exp)
        # Steady state: after the first two epochs (workers started and warm, cudnn tuned).
        steady = epoch_times.seconds[2:] or epoch_times.seconds[1:]
        return len(exp.dataset) / float(np.median(steady)), len(exp.dataset)

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
    t_ahead, t_same = side_by_side(evaluate(), evaluate(ahead=False), 3)
    t_ring, t_plain = side_by_side(evaluate(), evaluate(pinned_ring=False), 3)
    ours_eval, same_stream_eval = n_test * passes / t_ahead, n_test * passes / t_same
    ring_eval, plain_eval = n_test * passes / t_ring, n_test * passes / t_plain
    strategy.copy_ahead, strategy.pinned_ring = dev.type == "cuda", ring  # the run's own again
    eval_loader_alone = _eval_loader_rate(bench, test[0], dev, passes)
    nvjpeg, _ = train_rate(trainer("data.cache=false", "data.decode=gpu")[0])

    model = build_model("resnet18").to(dev).to(memory_format=torch.channels_last)
    opt, loss_fn = torch.optim.Adam(model.parameters(), 3e-4), IQALoss(0.1, 0.1)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(
        memory_format=torch.channels_last)
    y = torch.rand(batch, device=dev) * 2 - 1

    def bare(steps: int, train: bool) -> float:
        _sync(dev)
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
        _sync(dev)
        return steps * batch / (time.perf_counter() - t)

    steps = 40 if dev.type == "cuda" else 2
    bare(steps // 4, True)
    bare_train = max(bare(steps, True) for _ in range(2))
    model.eval()
    bare(steps // 4, False)
    bare_eval = max(bare(steps, False) for _ in range(2))

    from benchmarks.features import FeatureRows
    data = FeatureRows(torch.randint(0, 256, (ewc, 3, size, size), dtype=torch.uint8),
                       torch.rand(ewc) * 2 - 1)
    data = _WithTask(data)
    fisher_fast, fisher_slow, fisher_floor = fisher_times(model, data, dev, 2)
    setting = f"{size} px, batch {batch}, {workers} loader workers"
    return {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "cpu_cores": os.cpu_count(),
        "command": "python -m experiments.perf --gpu --json docs/perf_gpu.json",
        "commit": _git("describe", "--always", "--dirty", "--abbrev=7"),
        "rows": [asdict(r) for r in (
            Row("ResNet18 bf16 training: `iqacl run` from the image cache vs bare PyTorch on "
                "synthetic on-device tensors", ours, bare_train, "images/s", 0.8,
                note=f"{n} images, {setting}, median of epochs 3-{epochs}; cache filled in "
                     f"{fill_s:.0f} s"),
            Row("the training loader alone (the image cache, no model) vs bare PyTorch's "
                "training rate", loader_alone, bare_train, "images/s", None,
                note=f"{setting}, steady state: what the loop could reach if the model cost "
                     "nothing"),
            Row("ResNet18 bf16 evaluation: `iqacl run` from the image cache vs bare PyTorch on "
                "synthetic on-device tensors", ours_eval, bare_eval, "images/s", 0.8,
                note=f"{evaluated}, {setting}, best of 3 timed in turns"),
            Row("the evaluation loader alone (the run's worker pool, no model) vs bare PyTorch's "
                "evaluation rate", eval_loader_alone, bare_eval, "images/s", None,
                note=f"{evaluated}, {setting}, best of 3: what evaluation could reach if "
                     "the model cost nothing"),
            Row("evaluation with each batch's images copied on a side stream vs on the "
                "compute stream (Avalanche's)", ours_eval, same_stream_eval, "images/s", None,
                note=f"{evaluated}, {setting}, best of 3 timed in turns; predictions "
                     f"{_identical(runs[0], runs[1])}"),
            Row("training with the workers' images written into a pinned ring vs sent as new "
                "shared memory and pinned by the loader (PyTorch's way)", ours, plain_train,
                "images/s", None, note=f"{n} images, {setting}, median of epochs 3-{epochs}"),
            Row("evaluation with the workers' images written into a pinned ring vs sent as new "
                "shared memory and pinned by the loader (PyTorch's way)", ring_eval, plain_eval,
                "images/s", None, note=f"{evaluated}, {setting}, best of 3 timed in turns; "
                                       f"predictions {_identical(runs[0], runs[2])}"),
            Row("ResNet18 bf16 training with nvJPEG (`data.decode=gpu`, no cache) vs bare "
                "PyTorch", nvjpeg, bare_train, "images/s", None,
                note=f"{n} images, {setting}, median of epochs 3-{epochs}"),
            Row("EWC per-sample importance on the GPU, ResNet18: vmap vs loop", ewc / fisher_fast,
                ewc / fisher_slow, "samples/s", 5.0, bound=fisher_slow / fisher_floor,
                note=f"{ewc} samples, {size} px, fp32; one batched forward + backward alone: "
                     f"{fisher_slow / fisher_floor:.1f}× the loop"),
        )],
    }


def _identical(a: dict, b: dict) -> str:
    """Whether two evaluations' predictions ({experience: (rows, targets, preds)}) match."""
    same = all(np.array_equal(x[2], y[2]) for x, y in zip(a.values(), b.values(), strict=True))
    return "identical" if same else "DIFFER"


def _loader_rate(bench, batch: int, workers: int, dev: torch.device) -> float:
    """Images/s out of the run's kind of training loader (same dataset, collate, workers,
    pinned memory, epochs in one pass), copied to the device: the data path's ceiling."""
    from benchmarks.loaders import EpochLoader

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
    _sync(dev)


def _epoch_timer(dev: torch.device):
    from avalanche.core import SupervisedPlugin

    class EpochTimer(SupervisedPlugin):
        """Each training epoch's wall time, the GPU synchronised at both ends."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._t = 0.0

        def before_training_epoch(self, strategy, **kwargs) -> None:
            _sync(dev)
            self._t = time.perf_counter()

        def after_training_epoch(self, strategy, **kwargs) -> None:
            _sync(dev)
            self.seconds.append(time.perf_counter() - self._t)

    return EpochTimer()


# -- report --------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| what | measured | baseline | ratio | target | result | setting |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.target is None:
            target = "reported"
        elif r.absolute:
            target = f"{'<' if not r.higher_is_better else '≥'} {_fmt(r.target)} {r.unit}"
        else:
            target = f"≥ {r.target:g}×"
        result = {None: "—", True: "pass", False: "**FAIL**"}[r.passed]
        if r.target is not None and r.passed is None:
            result = f"out of reach here (bound {r.bound:.2f}×)"
        # Within 0.01 of its target, 2 decimals could show a failing ratio as the target.
        near = r.target is not None and not r.absolute and abs(r.ratio - r.target) < 0.01
        lines.append(f"| {r.what} | {_fmt(r.figure)} {r.unit} | {_fmt(r.baseline)} {r.unit} | "
                     f"{r.ratio:.{3 if near else 2}f}× | {target} | {result} | {r.note} |")
    return lines


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


CODE = ("benchmarks", "models", "strategies", "experiments")  # what the GPU rows measured


def _gpu_age(commit: str | None) -> str:
    """Which code the GPU rows measured: they are only redone when a GPU is lent."""
    if not commit:
        return "The commit these GPU rows measured is not known."
    if commit.endswith("-dirty"):
        return (f"Measured on a working tree with uncommitted changes over commit "
                f"`{commit.removesuffix('-dirty')}`: which code they measured is not on record.")
    since = _git("rev-list", "--count", f"{commit}..HEAD", "--", *CODE)
    if not since or since == "0":
        return f"Measured at commit `{commit}`, the code as it is now."
    changed = "1 commit has" if since == "1" else f"{since} commits have"
    return (f"Measured at commit `{commit}`; {changed} changed the code since "
            f"(`git log {commit}..HEAD -- {' '.join(CODE)}`), so these rows are not yet "
            "re-measured for them.")


def render(rows: list[Row], gpu: dict | None, meta: dict,
           json_path: str = "docs/perf_gpu.json") -> str:
    out = [
        "# Performance",
        "",
        "Written by `make perf` (`python -m experiments.perf`); do not edit by hand. Each row",
        "is measured in one run next to its baseline on the same machine, so the ratio holds",
        "even where the machine's absolute speed does not.",
        "",
        f"CPU rows: {meta['machine']}; {meta['date']}; {meta['took']:.0f} s in all.",
        "",
        *table(rows),
        "",
        "## GPU",
        "",
    ]
    if gpu is None:
        out += ["No GPU measurement on record (`docs/perf_gpu.json` is absent)."]
    else:
        out += [f"Measured on **{gpu['device']}** ({gpu['cpu_cores']} CPU cores, torch "
                f"{gpu['torch']}) with `{gpu['command']}`; both sides in the same call on the "
                "same card.", "", *table([Row(**r) for r in gpu["rows"]]), "",
                _gpu_age(gpu.get("commit") or _git("log", "-1", "--format=%h", "--", json_path))]
    out += ["", "## What the rows mean", "", *NOTES]
    return "\n".join(out) + "\n"


NOTES = [
    "- **Loader**: one pass of a DataLoader over AVA-sized JPEGs (500×375, JPEG quality 92, "
    "made from real photographs). Baseline: Pillow decode, then torchvision's transforms. "
    "Image cache: each image decoded once, resized to the eval short side (256 px for a 224 "
    "crop) and read back with one `pread` per image; the crop is the same and it stays "
    "uint8 (the model normalises on its device). Filling the cache is a one-time cost, "
    "shared by every later epoch, experience, strategy, seed and run. Batches are dropped "
    "as they come, as in training; the two sides are timed in turns and the best passes "
    "kept, so a slow spell of a shared machine does not land on one side only.",
    "- **Training / evaluation loop**: `iqacl run`'s `Trainer` (Avalanche's template with the "
    "suite's metrics, recorders and loss logging) against a hand-written loop with the same "
    "model, data, batch size, transforms and optimiser, best passes timed in turns. "
    "Per-minibatch work is kept on the device: metrics and the epoch loss are read once per "
    "experience or epoch, and the loss never reads a value back, so the loop queues the next "
    "minibatch while the GPU computes; on CUDA its images are copied on a side stream.",
    "- **Worker batches on CUDA**: loader workers write each batch's images into a ring of "
    "batch-sized slots in shared memory, page-locked once (`benchmarks/loaders.py: "
    "PinnedRing`), and send the slot's number. PyTorch's way, a new shared-memory tensor per "
    "batch that the main process maps and the loader's thread copies into pinned memory, "
    "costs the main process about 13 ms per 256-image 224 px batch on the H100 machine: "
    "more than the card's 7.5 ms to evaluate it. GPU evaluations are timed several in a row, "
    "for more batches than a pool builds ahead while it waits (2 per worker).",
    "- **Frozen backbone**: `model.freeze_backbone=true` (linear probe). With "
    "`model.cache_features=true` the backbone runs once per image and the head's epochs and "
    "the forgetting matrix reuse the features; the ratio grows with the number of epochs.",
    "- **EWC per-sample importance**: the empirical Fisher (squared per-sample gradients of "
    "the regression term) by `torch.func.vmap`, against one backward pass per sample. The two "
    "are compared in float64. Linear layers that see one row per sample skip vmap: the sum "
    "of their squared per-sample gradients is one product of squared inputs and squared "
    "output gradients (`strategies/fisher.py`). The bound is the loop's time over one "
    "batched forward and backward pass of the same samples, which any per-sample method must "
    "at least run: on two CPU cores a full convolutional network is compute-bound and the "
    "loop is already within 2× of that, so 5× cannot be reached there; the head and the GPU "
    "(where the loop is bound by per-sample overhead) are where the target applies.",
    "- **Stream building**: a 255,530-line AVA.txt, EVA votes of that size and a folder with "
    "one file per image (hard links), read, matched, split and wrapped as an Avalanche "
    "benchmark in a fresh process; no image is decoded.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes (tests)")
    parser.add_argument("--out", default="docs/PERFORMANCE.md")
    parser.add_argument("--gpu", action="store_true", help="measure the GPU rows only")
    parser.add_argument("--json", default="docs/perf_gpu.json",
                        help="GPU rows: written with --gpu, read otherwise")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="iqacl-perf-", dir=args.work) as tmp:
        work = Path(tmp)
        if args.gpu:
            if not torch.cuda.is_available() and not args.tiny:
                print("--gpu needs a CUDA device (--gpu --tiny runs on the CPU)", file=sys.stderr)
                return 2
            result = gpu_rows(work, **GPU_SIZES["tiny" if args.tiny else "full"])
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
            print("\n".join(table([Row(**r) for r in result["rows"]])))
            return 0
        started = time.time()
        rows = cpu_rows(work, SIZES["tiny" if args.tiny else "full"])
        gpu_file = Path(args.json)
        gpu = json.loads(gpu_file.read_text()) if gpu_file.is_file() else None
        meta = {"machine": f"{os.cpu_count()} CPU cores, {platform.processor() or 'x86_64'}, "
                           f"torch {torch.__version__}",
                "date": time.strftime("%Y-%m-%d"), "took": time.time() - started}
        Path(args.out).write_text(render(rows, gpu, meta, args.json))
        print("\n".join(table(rows)))
    return 0


def cpu_rows(work: Path, size: dict) -> list[Row]:
    from benchmarks.demo_data import make_demo_data

    photos, cache = work / "photos", work / "cache"
    make_demo_data(photos, n_ava=size["photos"], n_eva=size["photos"] // 2, size=(500, 375))
    steps = [
        # In the loading process: the data path's cost per core, with no IPC in the way.
        lambda: loader_rows(photos, cache, 0),
        lambda: loop_rows(photos, cache, size["loop_size"]),
        lambda: feature_rows(photos, cache, size["probe_size"], size["probe_epochs"], work),
        lambda: ewc_rows(photos, cache, size["ewc_samples"], size["ewc_size"]),
        lambda: stream_rows(work, size["ava_lines"], size["eva_images"], size["eva_votes"]),
        cli_rows,
        lambda: demo_rss_rows(work, *size["demo"]),
    ]
    rows = []
    for step in steps:
        t = time.time()
        rows += step()
        print(f"{rows[-1].what}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
