"""report.html of a six-dataset run: how long `iqacl report` takes, and the page's size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from .timing import ROOT, Row, timed


def report_rows(run_dir: Path, repeats: int = 3) -> list[Row]:
    """`iqacl report RUN_DIR` wall time (a fresh process: what a user waits for) and the
    size of the page it writes, for the routed six-dataset demo run of perf/routing.py."""
    def wall(args: list[str]) -> list[float]:
        return [timed(lambda: subprocess.run([sys.executable, *args], cwd=ROOT,
                                             capture_output=True, check=True))
                for _ in range(repeats)]

    took = wall(["-m", "experiments.cli", "report", str(run_dir)])
    floor = wall(["-c", "import experiments.grid_report"])
    size = (run_dir / "report.html").stat().st_size / 2**20
    note = (f"the routed demo_biqa.yaml run of the routing rows (6 datasets: three heatmaps, "
            f"curves, six scatters, routing), median of {repeats}; baseline: the imports alone")
    return [Row("`iqacl report` of a six-dataset run, wall time (< 5 s)", float(np.median(took)),
                float(np.median(floor)), "s", 5.0, higher_is_better=False, absolute=True,
                samples=took, note=note),
            Row("report.html of a six-dataset run, size (< 2 MB)", size, 0.0, "MiB", 2.0,
                higher_is_better=False, absolute=True, samples=[size],
                note="one file: every image inline as PNG data")]
