"""A CSV of every metric value (Avalanche's CSVLogger is hard-wired to accuracy/loss)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from avalanche.logging import BaseLogger


class CSVMetricLogger(BaseLogger):
    """Appends `name,value,step` for every scalar metric value, flushed as it comes."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="")  # noqa: SIM115 (kept open for the run)
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["name", "value", "step"])

    def log_single_metric(self, name, value, x_plot) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._writer.writerow([name, "" if math.isnan(value) else value, x_plot])
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()
