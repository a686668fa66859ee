"""`python -m perf`: the CPU rows and docs/PERFORMANCE.md, or (`--gpu`) the GPU rows as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import __doc__ as DOC
from .crops import crop_rows
from .ewc import ewc_rows
from .gpu import GPU_SIZES, gpu_rows
from .loops import feature_rows, loader_rows, loop_rows
from .pages import report_rows
from .recipe import loss_rows, selection_rows
from .report import render, table
from .routing import kmeans_rows, routing_run_rows, routing_scale_rows, tsn_rows
from .startup import cli_rows, demo_rss_rows, stream_rows
from .timing import Row

SIZES = {
    # photos: AVA-sized JPEGs; probe_epochs: the linear probe's epochs; *_rounds: repeats.
    "full": {"photos": 480, "loop_size": 64, "probe_size": 128, "probe_epochs": 30,
             "probe_rounds": 3, "ewc_samples": 48, "ewc_size": 128, "ava_lines": 255_530,
             "eva_images": 4_070, "eva_votes": 137_000, "stream_rounds": 3,
             "demo": (600, 360), "crop_images": 48, "crop_rounds": 5,
             "loss_size": 64, "loss_rounds": 7, "select_size": 64, "select_rounds": 3,
             "routing": (1.0, 64, 3), "routing_scale": ((384, 512), 3),
             "kmeans": (7000, 20, 384, 2), "tsn": (64, 5)},
    "tiny": {"photos": 40, "loop_size": 48, "probe_size": 48, "probe_epochs": 2,
             "probe_rounds": 1, "ewc_samples": 4, "ewc_size": 48, "ava_lines": 2_000,
             "eva_images": 100, "eva_votes": 3_000, "stream_rounds": 1, "demo": (40, 20),
             "crop_images": 4, "crop_rounds": 1,
             "loss_size": 32, "loss_rounds": 1, "select_size": 48, "select_rounds": 1,
             "routing": (0.05, 32, 1), "routing_scale": ((48, 64), 1),
             "kmeans": (500, 1, 64, 1), "tsn": (32, 1)},
}


def cpu_rows(work: Path, size: dict) -> list[Row]:
    from benchmarks.demo.eva_ava import make_demo_data

    photos, cache = work / "photos", work / "cache"
    make_demo_data(photos, n_ava=size["photos"], n_eva=size["photos"] // 2, size=(500, 375))
    steps = [
        # In the loading process: the data path's cost per core, with no IPC in the way.
        lambda: loader_rows(photos, cache, 0),
        lambda: loop_rows(photos, cache, size["loop_size"]),
        lambda: feature_rows(photos, cache, size["probe_size"], size["probe_epochs"], work,
                             size["probe_rounds"]),
        lambda: crop_rows(work, size["crop_images"], rounds=size["crop_rounds"]),
        lambda: ewc_rows(size["ewc_samples"], size["ewc_size"]),
        lambda: loss_rows(size["loss_size"], rounds=size["loss_rounds"]),
        lambda: selection_rows(photos, cache, size["select_size"],
                               rounds=size["select_rounds"]),
        lambda: routing_run_rows(work, *size["routing"]),
        lambda: report_rows(work / "default" / "routed"),  # the run routing_run_rows made
        lambda: routing_scale_rows(size["routing_scale"][0], rounds=size["routing_scale"][1]),
        lambda: kmeans_rows(size["kmeans"][0], n_init=size["kmeans"][1],
                            train_size=size["kmeans"][2], steps=size["kmeans"][3]),
        lambda: tsn_rows(*size["tsn"]),
        lambda: stream_rows(work, size["ava_lines"], size["eva_images"], size["eva_votes"],
                            size["stream_rounds"]),
        cli_rows,
        lambda: demo_rss_rows(work, *size["demo"]),
    ]
    rows = []
    for step in steps:
        t = time.time()
        rows += step()
        print(f"{rows[-1].what}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf", description=DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes (tests)")
    parser.add_argument("--out", default="docs/PERFORMANCE.md")
    parser.add_argument("--gpu", action="store_true", help="measure the GPU rows only")
    parser.add_argument("--json", default="docs/perf_gpu.json",
                        help="GPU rows: written with --gpu, read otherwise")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
