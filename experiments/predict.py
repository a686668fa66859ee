"""`iqacl predict`: score new images with a finished run's model.

The model is rebuilt from the run's own config, its weights loaded from
`RUN_DIR/models/<stage>.pt`; images get the run's evaluation transform; scores
are written on the scale of the chosen experience's dataset. An image that
cannot be read is reported and skipped, never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import torch

from benchmarks.datasets.files import IMAGE_SUFFIXES
from benchmarks.errors import UserError
from benchmarks.images.cache import eval_resize
from benchmarks.images.decode import load_rgb
from benchmarks.stream import eval_transform

log = logging.getLogger(__name__)


def image_files(inputs: list[str | Path]) -> list[Path]:
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            files.append(item)
        else:
            raise UserError(f"{item}: no such image or folder")
    return files


def load_run_model(run_dir: Path, stage: str | None = None) -> tuple[torch.nn.Module, dict, str]:
    """The run's model after `stage` (default: the last one), its results, the stage."""
    from strategies import make_strategy

    from .checkpoint import load_model_state
    from .run import model_from_config

    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no results.json; is it a finished run folder?")
    results = json.loads(path.read_text())
    stages = sorted(p.stem for p in (run_dir / "models").glob("*.pt"))
    if not stages:
        raise UserError(f"{run_dir}/models: no saved model (runs before this version kept none)")
    stage = stage or ("joint" if "joint" in stages else max(stages, key=_stage_order))
    if stage not in stages:
        raise UserError(f"{run_dir}: no model for stage '{stage}'; saved: {stages}")
    config = {**results["config"], "model": {**results["config"]["model"], "pretrained": False}}
    model = model_from_config(config)
    hparams = {k: v for k, v in config["strategy"].items() if k != "name"}
    parts = make_strategy(config["strategy"]["name"], **hparams)
    if parts.wrap_model is not None:
        model = parts.wrap_model(model)
    state = torch.load(run_dir / "models" / f"{stage}.pt", weights_only=True, map_location="cpu")
    load_model_state(model, state)
    return model.eval(), results, stage


def _stage_order(stage: str) -> int:
    return int(stage.split("_")[1]) if stage.startswith("after_") else -1


@torch.no_grad()
def predict(run_dir: str | Path, inputs: list[str | Path], out: str | Path,
            stage: str | None = None, task: int | None = None, batch_size: int = 32) -> dict:
    """Score images; write `path,score` rows to `out`; return counts."""
    run_dir = Path(run_dir)
    model, results, stage = load_run_model(run_dir, stage)
    names = results["experiences"]
    task = len(names) - 1 if task is None else task
    if not 0 <= task < len(names):
        raise UserError(f"--task {task}: the run has experiences 0..{len(names) - 1} ({names})")
    lo, hi = results["scales"][names[task]]
    size = results["config"]["data"]["image_size"]
    transform, short_side = eval_transform(size), eval_resize(size)
    files = image_files(inputs)
    scored, bad = [], []

    def flush(batch: list[tuple[Path, torch.Tensor]]) -> None:
        x = torch.stack([t for _, t in batch])
        if hasattr(model, "forward_single_task"):
            y = model.forward_single_task(x, task)
        else:
            y = model(x)
        for (p, _), v in zip(batch, y.tolist(), strict=True):
            scored.append((p, lo + (v + 1.0) * (hi - lo) / 2.0))

    batch: list[tuple[Path, torch.Tensor]] = []
    for path in files:
        try:
            batch.append((path, transform(load_rgb(str(path), short_side))))
        except Exception as exc:  # any unreadable file: report it and go on
            bad.append((path, f"{type(exc).__name__}: {exc}"))
            log.warning("skipped %s: %s", path, bad[-1][1])
            continue
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score"])
        writer.writerows((os.fspath(p), f"{s:.6f}") for p, s in scored)
    return {"scored": len(scored), "skipped": len(bad), "stage": stage,
            "experience": names[task], "scale": [lo, hi]}
