"""Killed at any moment, resumed to the same numbers (slow: `make test-slow`, ~10 min).

Real `iqacl run` processes get a real SIGKILL: at chosen moments (during training,
during an evaluation, while a checkpoint is half written, before the first
checkpoint) and at moments chosen by the clock from outside (35% and 60% of an
uninterrupted run's time). Each is relaunched with `--resume` and must leave the
folder the uninterrupted run leaves: matrices, every predictions file, splits,
dropped.csv and counts, on data with unreadable train, val and test images.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO, every_drop, read_folder

STRATEGIES = ["ewc", "si", "lwf", "replay", "packnet"]
# Moments a run passes through (experiences 0 and 1; checkpoints step_1 and step_2).
MOMENTS = {
    "training experience 1": "1:3",
    "evaluation after experience 1": "eval:2",
    "writing the last checkpoint": "checkpoint:2",
}
BEFORE_FIRST = {"ewc": "eval:0", "si": "0:2", "lwf": "eval:0", "replay": "0:2",
                "packnet": "eval:0"}  # the initial evaluation, or the first experience
CLOCK = (0.35, 0.60)


def command(out: Path, root: Path, strategy: str, *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("iqacl")), "run", str(DEMO), "--out", str(out),
            f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=48", "train.epochs=2",
            "log.progress=false", "log.plots=false", "data.max_dropped_fraction=0.05",
            f"strategy.name={strategy}", *extra]


def killed(args: list[str], kill_at: str | None = None, after_s: float | None = None) -> int:
    env = {**os.environ, **({"IQACL_KILL_AT": kill_at} if kill_at else {})}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if after_s is not None:
        time.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.fixture(scope="module")
def data(tiny_demo, tmp_path_factory):
    return every_drop(tiny_demo, tmp_path_factory.mktemp("sweep"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_kill_resumes_to_the_uninterrupted_folder(strategy, data, tmp_path):
    started = time.perf_counter()
    assert subprocess.run(command(tmp_path / "whole", data, strategy)).returncode == 0
    whole_s = time.perf_counter() - started
    reference = read_folder(tmp_path / "whole")
    assert reference["counts"]["AVA"]["unreadable"] == 3  # dropped.csv has work to do

    kills = {**{f"at {m} ({spec})": (spec, None) for m, spec in MOMENTS.items()},
             f"before the first checkpoint ({BEFORE_FIRST[strategy]})":
                 (BEFORE_FIRST[strategy], None),
             **{f"by the clock at {f:.0%}": (None, f * whole_s) for f in CLOCK}}
    outcomes = {}
    for i, (what, (spec, after_s)) in enumerate(kills.items()):
        out = tmp_path / f"kill{i}"
        rc = killed(command(out, data, strategy), spec, after_s)
        if rc != -signal.SIGKILL:
            outcomes[what] = f"not killed (exit status {rc})"
            continue
        resumed = subprocess.run(command(out, data, strategy, "--resume"),
                                 capture_output=True, text=True)
        if resumed.returncode != 0:
            outcomes[what] = f"resume failed: {resumed.stderr.strip().splitlines()[-1:]}"
        elif read_folder(out) != reference:
            outcomes[what] = "resumed to different results"
        else:
            outcomes[what] = "identical"
    assert outcomes == dict.fromkeys(kills, "identical"), outcomes
