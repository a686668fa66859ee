"""Weights & Biases logging of the project's own, and a reader for offline `.wandb` files.

Avalanche's `WandBLogger` breaks on current wandb (REFERENCE §2), so this is
a small `BaseLogger` of our own. W&B is never allowed to cost a run: every
call goes through `_safe`; the first failure is reported once, and the run
continues offline (if online failed to start) or without W&B.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avalanche.logging import BaseLogger

log = logging.getLogger(__name__)


class WandbLogger(BaseLogger):
    """Scalars under Avalanche's metric names, matrices as tables and heatmaps, summary."""

    def __init__(self, config: dict, run_dir: Path, *, mode: str = "offline",
                 project: str = "iqacl", entity: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, name: str | None = None):
        super().__init__()
        self.run = None
        self.run_dir = Path(run_dir)
        self._warned = False
        kwargs = dict(project=project, entity=entity, group=group, tags=tags or None, name=name,
                      config=config, dir=str(self.run_dir))
        self.run, error = self._start(mode, kwargs)
        if self.run is None and mode == "online":
            self.run, _ = self._start("offline", kwargs)
        if error is not None:
            outcome = "offline" if self.run is not None else "without W&B"
            self._warn(f"W&B could not start in {mode} mode ({error}); the run goes on "
                       f"{outcome}")

    def _start(self, mode: str, kwargs: dict):
        try:
            import wandb

            self.run_dir.mkdir(parents=True, exist_ok=True)
            return wandb.init(mode=mode, reinit="finish_previous", **kwargs), None
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning(message)
            self._warned = True

    def _safe(self, fn, *args, **kwargs) -> Any:
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self._warn(f"W&B failed ({type(exc).__name__}: {exc}); the run goes on without "
                       "W&B, results.json is unaffected")
            self.run = None
            return None

    # -- Avalanche's logger interface: every metric value as a scalar -------------------
    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            self._safe(lambda: self.run.log({name: value}, step=x_plot))

    # -- the suite's own moments ----------------------------------------------------------
    def log_matrix(self, results: dict, step: int, key: str = "matrix_so_far") -> None:
        """The SRCC matrix so far as a table and a heatmap image."""
        self._safe(self._log_matrix, results, step, key)

    def _log_matrix(self, results: dict, step: int, key: str) -> None:
        import wandb

        from .plots import heatmap

        png = self.run_dir / f".{key}_{step}.png"
        heatmap(results, "srcc", png)
        self.run.log({f"{key}/srcc": _table(results, "srcc"),
                      f"{key}/srcc_heatmap": wandb.Image(str(png))}, step=step)

    def finish(self, results: dict, run_dir: Path, step: int) -> None:
        """Full matrices, every summary metric, and results.json + plots as an artifact.

        Offline, it returns once the run's `.wandb` file holds its exit record: W&B's
        service writes it a moment after `finish()` returns (seen empty under load), and
        a script may `wandb sync` it at once."""
        self._safe(self._finish, results, Path(run_dir), step)
        sync_file = self._safe(lambda: Path(self.run.settings.sync_file))
        offline = self._safe(lambda: self.run.settings.mode == "offline")
        self._safe(lambda: self.run.finish())
        self.run = None
        if offline and sync_file is not None and not wait_for_exit_record(sync_file):
            log.warning("W&B: %s was not complete %d s after the run finished; wait before "
                        "`wandb sync`", sync_file, SYNC_WAIT_S)

    def _finish(self, results: dict, run_dir: Path, step: int) -> None:
        import wandb

        self.run.log({f"matrix/{m}": _table(results, m) for m in ("srcc", "plcc")}, step=step)
        for metric, values in results["summary"].items():
            for k, v in values.items():
                self.run.summary[f"{metric}/{k}"] = v
        self.run.summary["uses_task_labels"] = results["uses_task_labels"]
        self.run.summary["protocol"] = results["protocol"]
        routing = results.get("routing") or {}
        if routing.get("mean_accuracy"):  # eval.heads=weighted, after the last experience
            self.run.summary["routing/accuracy"] = list(routing["mean_accuracy"].values())[-1]
        artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
        for name in ("results.json", "srcc_matrix.png", "plcc_matrix.png", "srcc_curves.png",
                     "routing_matrix.png", "report.html"):
            if (run_dir / name).is_file():
                artifact.add_file(str(run_dir / name))
        self.run.log_artifact(artifact)


def _table(results: dict, metric: str):
    import wandb

    names = results["experiences"]
    stages = ["joint"] if results["protocol"] == "joint" else names
    rows = [["initial", *results["initial"][metric]]]
    rows += [[f"after {s}", *row] for s, row in zip(stages, results["matrices"][metric],
                                                    strict=False)]
    return wandb.Table(columns=["stage", *names], data=rows)


# -- reading an offline run back (wandb 0.31 ships no reader) ---------------------------
HEADER = b":W&B\xe1\xbe\x00"
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


SYNC_WAIT_S = 30


def wait_for_exit_record(path: Path, timeout_s: float = SYNC_WAIT_S) -> bool:
    """Whether the `.wandb` file ends in its exit record within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            kinds = [r.WhichOneof("record_type") for r in read_wandb_records(path)]
            if "exit" in kinds:
                return True
        except Exception:  # not there yet, or a record only half written (DecodeError)
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def read_wandb_records(path: str | Path) -> Iterator:
    """Every record of a `.wandb` file, as `wandb.proto.wandb_internal_pb2.Record`.

    The file is a 7-byte header, then LevelDB-log records in 32 KiB blocks
    (4-byte checksum, 2-byte little-endian length, 1-byte type).
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a .wandb file (header {data[:7]!r})")
    pos, parts = len(HEADER), []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            parts = [payload]
        elif kind == FIRST:
            parts = [payload]
            continue
        elif kind == MIDDLE:
            parts.append(payload)
            continue
        elif kind == LAST:
            parts.append(payload)
        record = wandb_internal_pb2.Record()
        record.ParseFromString(b"".join(parts))
        yield record
