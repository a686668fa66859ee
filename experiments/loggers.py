"""A CSV of every metric value (Avalanche's CSVLogger is hard-wired to accuracy/loss)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from avalanche.logging import BaseLogger


class CSVMetricLogger(BaseLogger):
    """Appends `name,value,step` for every scalar metric value, flushed as it comes.

    `keep_until`: a resumed run's file keeps the rows up to that step (the finished
    experiences'); later rows, of the step a kill interrupted, are logged again.
    """

    def __init__(self, path: str | Path, keep_until: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                kept = [r for r in list(csv.reader(fh))[1:]
                        if len(r) == 3 and r[2].isdigit() and int(r[2]) <= keep_until]
        self._fh = open(self.path, "w", newline="")  # noqa: SIM115 (kept open for the run)
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["name", "value", "step"])
        self._writer.writerows(kept)

    def log_single_metric(self, name, value, x_plot) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._writer.writerow([name, "" if math.isnan(value) else value, x_plot])
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()
