"""A grid's unit of work: one run at one seed, in its own folder; run here or in a Ray task."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run of a grid: a variant at a seed, its validated config and its folder."""

    label: str
    seed: int
    config: dict
    run_dir: Path


@dataclass
class Failure:
    label: str
    seed: int
    run_dir: Path
    error: str


def run_job(job: Job, i: int = 0, n: int = 1) -> dict:
    """One grid run: skipped when finished, resumed when interrupted, else started."""
    from .checkpoint import latest_checkpoint
    from .run import run

    if (job.run_dir / "results.json").exists():
        log.info("[%d/%d] %s seed %d: done already", i + 1, n, job.label, job.seed)
        result = json.loads((job.run_dir / "results.json").read_text())
    else:
        resuming = latest_checkpoint(job.run_dir) is not None
        log.info("[%d/%d] %s seed %d%s", i + 1, n, job.label, job.seed,
                 " (resuming)" if resuming else "")
        # With no checkpoint (new, or killed before its first one) this starts from the top.
        result = run(job.config, job.run_dir, resume=True)
    return {"label": job.label, "seed": job.seed, **result}
