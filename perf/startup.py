"""Before any training: building a full-size stream, `iqacl --help`, a demo run's memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .timing import PEAK_MB, ROOT, Row, child, timed


def stream_rows(work: Path, ava_lines: int, eva_images: int, eva_votes: int,
                repeats: int = 3) -> list[Row]:
    """Building the stream from full-size label files and an image folder of that many files."""
    root = make_full_size_dataset(work / "full", ava_lines, eva_images, eva_votes)
    ava, eva = str(root / "AVA"), str(root / "EVA")
    floors, builds = [], []
    # In turns; two processes, so the baseline's reading does not count in the build's peak.
    for _ in range(repeats):
        floors.append(child(f"""
import json, os, time
import pandas as pd
t = time.perf_counter()
pd.read_csv({ava + '/AVA.txt'!r}, sep=' ', header=None)
pd.read_csv({eva + '/data/votes_filtered.csv'!r}, sep='=')
n = sum(1 for _ in os.scandir({ava + '/images'!r}))
print(json.dumps({{"s": time.perf_counter() - t}}))
""")["s"])
        builds.append(child(f"""
import json, time
from benchmarks.stream import build_stream
rss0 = {PEAK_MB}
t = time.perf_counter()
s = build_stream([{{"name": "EVA", "format": "eva", "root": {eva!r}}},
                  {{"name": "AVA", "format": "ava", "root": {ava!r}}}])
took = time.perf_counter() - t
print(json.dumps({{"took": took, "rss0": rss0, "rss": {PEAK_MB},
                  "counts": [len(e.table) for e in s.experiences]}}))
"""))
    took, rss, rss0 = ([b[k] for b in builds] for k in ("took", "rss", "rss0"))
    note = (f"{ava_lines:,} AVA lines, {eva_votes:,} EVA votes, {sum(builds[0]['counts']):,} "
            f"image files (hard links to one JPEG); median of {repeats} fresh processes")
    med = lambda v: float(np.median(v))  # noqa: E731
    return [
        Row("building the stream from full-size label files (< 5 s)", med(took), med(floors),
            "s", 5.0, higher_is_better=False, absolute=True, samples=took,
            note=note + "; baseline: pandas reading the two label files + listing the folder"),
        Row("peak memory building that stream (< 1 GB)", med(rss), med(rss0), "MB", 1024.0,
            higher_is_better=False, absolute=True, samples=rss,
            note="baseline: the same process after importing torch and Avalanche"),
    ]


def make_full_size_dataset(root: Path, ava_lines: int, eva_images: int,
                           eva_votes: int) -> Path:
    """Label files the size of the real ones; every image a hard link to one small JPEG."""
    from PIL import Image

    from benchmarks.demo.eva_ava import write_ava_labels, write_eva_labels

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


def cli_rows(repeats: int = 5) -> list[Row]:
    """`iqacl --help` wall time against importing what it avoids (torch and Avalanche)."""
    def wall(args: list[str]) -> list[float]:
        return [timed(lambda: subprocess.run([sys.executable, *args], cwd=ROOT,
                                             capture_output=True, check=True))
                for _ in range(repeats)]

    helps, heavy = wall(["-m", "experiments.cli", "--help"]), wall(
        ["-c", "import torch, avalanche.training"])
    return [Row("`iqacl --help` wall time (< 1.5 s)", float(np.median(helps)),
                float(np.median(heavy)), "s", 1.5, higher_is_better=False, absolute=True,
                samples=helps, note=f"median of {repeats}; baseline: `import torch, "
                                    "avalanche.training` alone")]


def demo_rss_rows(work: Path, n_ava: int, n_eva: int) -> list[Row]:
    """Peak memory of a demo-sized run (`iqacl run`, one epoch per experience)."""
    from benchmarks.demo.eva_ava import make_demo_data

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
                note=f"{n_ava} AVA + {n_eva} EVA images at 128 px, 1 epoch, {run['s']:.0f} s "
                     "(one run); baseline: the process after its imports")]
