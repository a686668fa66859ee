"""docs/PERFORMANCE.md: the rows as tables, the GPU file folded in, what each row means."""

from __future__ import annotations

import subprocess

from .timing import ROOT, Row


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _spread(r: Row) -> str:
    if r.spread is None:
        return "—"
    lo, hi = r.spread
    if r.absolute:
        return f"{_fmt(lo)}–{_fmt(hi)} {r.unit} ({len(r.samples)})"
    return f"{lo:.2f}–{hi:.2f}× ({len(r.samples)})"


def table(rows: list[Row]) -> list[str]:
    lines = ["| what | measured | baseline | ratio | spread (repeats) | target | result | "
             "setting |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.target is None:
            target = "reported"
        elif r.absolute:
            target = f"{'<' if not r.higher_is_better else '≥'} {_fmt(r.target)} {r.unit}"
        else:
            target = f"{'≤' if not r.higher_is_better else '≥'} {r.target:g}×"
        result = {None: "—", True: "pass", False: "**FAIL**"}[r.passed]
        if r.target is not None and r.passed is None:
            result = f"out of reach here (bound {r.bound:.2f}×)"
        # Within 0.01 of its target, 2 decimals could show a failing ratio as the target.
        near = r.target is not None and not r.absolute and abs(r.ratio - r.target) < 0.01
        if not r.baseline:  # a figure with nothing to compare it with (a computed size)
            base, ratio = "—", "—"
        else:
            base, ratio = f"{_fmt(r.baseline)} {r.unit}", f"{r.ratio:.{3 if near else 2}f}×"
        lines.append(f"| {r.what} | {_fmt(r.figure)} {r.unit} | {base} | {ratio} | "
                     f"{_spread(r)} | {target} | {result} | {r.note} |")
    return lines


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


CODE = ("benchmarks", "models", "strategies", "experiments")  # what the GPU rows measured


def gpu_age(commit: str | None) -> str:
    """Which code the GPU rows measured: they are only redone when a GPU is lent."""
    if not commit:
        return "The commit these GPU rows measured is not known."
    if commit.endswith("-dirty"):
        return (f"Measured on a working tree with uncommitted changes over commit "
                f"`{commit.removesuffix('-dirty')}`: which code they measured is not on record.")
    since = git("rev-list", "--count", f"{commit}..HEAD", "--", *CODE)
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
        "Written by `make perf` (`python -m perf`); do not edit by hand. Each row is measured",
        "in one run next to its baseline on the same machine, so the ratio holds even where",
        "the machine's absolute speed does not. A row is repeated, its two sides in turns;",
        "the ratio is the median of its repeats, the spread their lowest and highest, and",
        "the target is judged on the median alone.",
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
                gpu_age(gpu.get("commit") or git("log", "-1", "--format=%h", "--", json_path))]
    out += ["", "## What the rows mean", "", *NOTES]
    return "\n".join(out) + "\n"


NOTES = [
    "- **Loader**: one pass of a DataLoader over AVA-sized JPEGs (500×375, JPEG quality 92, "
    "made from real photographs). Baseline: Pillow decode, then torchvision's transforms. "
    "Image cache: each image decoded once, resized to the eval short side (256 px for a 224 "
    "crop) and read back with one `pread` per image; the crop is the same and it stays "
    "uint8 (the model normalises on its device). Filling the cache is a one-time cost, "
    "shared by every later epoch, experience, strategy, seed and run. Batches are dropped "
    "as they come, as in training; the two sides are timed in turns, so a slow spell of a "
    "shared machine lands on both sides of a repeat rather than on one.",
    "- **Training / evaluation loop**: `iqacl run`'s `Trainer` (Avalanche's template with the "
    "suite's metrics, recorders and loss logging) against a hand-written loop with the same "
    "model, data, batch size, transforms and optimiser, timed in turns. "
    "Per-minibatch work is kept on the device: metrics and the epoch loss are read once per "
    "experience or epoch, and the loss never reads a value back, so the loop queues the next "
    "minibatch while the GPU computes; on CUDA its images are copied on a side stream.",
    "- **Worker batches on CUDA**: loader workers write each batch's images into a ring of "
    "batch-sized slots in shared memory, page-locked once (`benchmarks/images/loaders.py: "
    "PinnedRing`), and send the slot's number. PyTorch's way, a new shared-memory tensor per "
    "batch that the main process maps and the loader's thread copies into pinned memory, "
    "costs the main process about 13 ms per 256-image 224 px batch on the H100 machine: "
    "more than the card's 7.5 ms to evaluate it. GPU evaluations are timed several in a row, "
    "for more batches than a pool builds ahead while it waits (2 per worker).",
    "- **Crop transform**: quality datasets (`transform: crop`) train on random crops at the "
    "image's own resolution, from BMP and PNG files that have no reduced-size decoding, so "
    "without the cache each epoch decodes every full-size file again. The native cache "
    "(`data.cache` with crops) stores each image after the adaptive resize, uint8, and the "
    "crop and flip are taken from it. The size row is computed from the six protocol "
    "datasets' image counts and usual sizes (not measured: none of them is on this machine).",
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
    "- **Routing** (`eval.heads: weighted`): the seconds a six-dataset routed run spends "
    "on routing features (the frozen initial network over each test image once, cached, "
    "and over each experience's training images once, for its prototypes) against the rest "
    "of its evaluation (test and validation rows, per-epoch selection). The training "
    "images' pass is the method's (the field fits prototypes on all of a task's training "
    "images) and the training split is the larger part of a dataset, so the ratio sits "
    "near train / (stages x test + val) whatever the speed: about 1/3 at the default "
    "(the model's own copy, the same input). The field's routing network is a small frozen "
    "branch; `eval.routing.network` / `image_size` give this suite one (MobileNetV3-Small "
    "at half the resolution in the second row). On the demo stand-ins (whole test images "
    "of at most 112 px) evaluation itself is cheap, so the ratio stays above target; the "
    "protocol-scale row times both networks per image on this CPU at the real datasets' "
    "sizes and multiplies by the run's passes (estimated, not run). K-means: one KonIQ-sized "
    "experience's prototypes (synthetic features, the field's n_init) against that "
    "experience's training, extrapolated from timed ResNet-18 steps at the field's 384 px "
    "crops. TSN: `weighted` scoring runs the backbone once per seen task, each with its "
    "BatchNorm set, where `oracle` runs it once.",
    "- **Report**: `iqacl report RUN_DIR` in a fresh process on the routed six-dataset demo "
    "run (three heatmaps, curves, six scatters, the routing matrix, all inline), and the "
    "size of the one file it writes.",
    "- **Stream building**: a 255,530-line AVA.txt, EVA votes of that size and a folder with "
    "one file per image (hard links), read, matched, split and wrapped as an Avalanche "
    "benchmark in a fresh process; no image is decoded.",
]
