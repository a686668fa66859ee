"""Rows of the report, and timing: repeats in turns, judged on their median.

A shared VM's speed moves by 10-30% from minute to minute, so one timing says
little. Each row is measured several times, its two sides in turns (a slow
spell falls on both), and reports the median and the spread of its repeats;
a target is passed or failed on the median alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    # What the target judges, once per repeat (the ratio, or the figure of an absolute
    # row); the row's value is their median. None: one measurement (older GPU files).
    samples: list[float] | None = None

    @property
    def ratio(self) -> float:
        if self.samples and not self.absolute:
            return float(np.median(self.samples))
        return self.figure / self.baseline if self.baseline else float("nan")

    @property
    def judged(self) -> float:
        if self.absolute:
            return float(np.median(self.samples)) if self.samples else self.figure
        return self.ratio

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.samples), max(self.samples)) if self.samples else None

    @property
    def passed(self) -> bool | None:
        if self.target is None or (self.bound is not None and self.bound < self.target):
            return None
        value = self.judged
        if self.higher_is_better:
            return value >= self.target
        return value < self.target if self.absolute else value <= self.target


@dataclass
class Turns:
    """Seconds of each side per repeat, timed in turns."""

    fast: list[float]
    slow: list[float]

    @property
    def ratios(self) -> list[float]:
        """Per repeat: how many times faster the fast side was (a rate ratio)."""
        return [s / f for f, s in zip(self.fast, self.slow, strict=True)]

    def rates(self, n: float) -> tuple[float, float]:
        """Median items/s of each side, for `n` items per call."""
        return n / float(np.median(self.fast)), n / float(np.median(self.slow))

    def row(self, what: str, n: float, unit: str, target: float | None, **kw) -> Row:
        fast, slow = self.rates(n)
        return Row(what, fast, slow, unit, target, samples=self.ratios, **kw)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls (a floor: what the work costs at least)."""
    return min(timed(fn) for _ in range(repeats))


def side_by_side(fast: Callable[[], object], slow: Callable[[], object], rounds: int,
                 fast_repeats: int = 1) -> Turns:
    """Each side timed once per round, in turns. A side too short to time alone
    (`fast_repeats` > 1) is timed that many times a round, and its best kept."""
    a, b = [], []
    for _ in range(rounds):
        a.append(min(timed(fast) for _ in range(fast_repeats)))
        b.append(timed(slow))
    return Turns(a, b)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


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
    """A run's config over the photos at `root` (EVA + AVA), from the image cache."""
    from experiments.config import load_config

    return load_config(None, [
        f"stream=[{{name: EVA, format: eva, root: '{root / 'EVA'}'}}, "
        f"{{name: AVA, format: ava, root: '{root / 'AVA'}'}}]",
        "model.pretrained=false", "log.progress=false", "log.plots=false", "log.csv=false",
        "eval.validation=false", "data.cache=true", f"data.cache_dir={cache_dir}", *extra])
