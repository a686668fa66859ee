"""Checkpoints after each experience, and resuming a run from the last one.

A checkpoint holds everything the rest of the run depends on: model,
optimizer, every strategy plugin's state (the state contract), Avalanche's
training clock, the RNG states and the predictions so far. It is written to a
temporary file and renamed, so a kill never leaves half a checkpoint, and it
holds only tensors and plain values: it loads with `weights_only=True`.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.core import SupervisedPlugin

from benchmarks.datasets.files import DROP_COLUMNS
from benchmarks.errors import UserError

from .results import StagePredictions, atomic_file

FORMAT = 2  # 2: the images found unreadable are part of the checkpoint
STARTED = "started.json"  # written once a run has passed its checks; gone when it finishes
# What a run writes before its first checkpoint: discarded when it is started over.
ATTEMPT = ("models", "predictions", "splits", "checkpoints", "wandb", "tensorboard",
           "metrics.csv", "dropped.csv", "srcc_matrix.png", "plcc_matrix.png",
           "srcc_curves.png", "routing_matrix.png", "report.html", STARTED)
log = logging.getLogger(__name__)


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def _predictions(preds: StagePredictions | None) -> dict | None:
    if preds is None:
        return None
    return {stage: {j: tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
                    for j, arrays in per_exp.items()}
            for stage, per_exp in preds.stages.items()}


def _restore_predictions(preds: StagePredictions | None, saved: dict | None) -> None:
    if preds is None or saved is None:
        return
    for stage, per_exp in saved.items():
        preds.add(stage, {j: tuple(t.numpy() for t in arrays) for j, arrays in per_exp.items()})


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def save_checkpoint(out: Path, bench, done: int, test: StagePredictions,
                    val: StagePredictions | None) -> Path:
    """Atomically write `checkpoints/step_<done>.pt` after `done` finished steps."""
    strategy = bench.trainer.strategy
    model = strategy.model
    state = {
        "format": FORMAT,
        "done": done,
        "config": _comparable(bench.config),
        "model": model.state_dict(),
        "known_tasks": sorted(getattr(model, "known_train_tasks_labels", [])),
        "optimizer": strategy.optimizer.state_dict(),
        "plugins": [p.state_dict() if hasattr(p, "state_dict") else None
                    for p in bench.parts.plugins],
        "clock": {k: v for k, v in vars(strategy.clock).items() if isinstance(v, int)},
        "rng": rng_state(),
        "test": _predictions(test),
        "val": _predictions(val),
        "train_loss": bench.trainer.losses.per_experience,
        # The recipe's records so far (each epoch's lr, the selected epochs): results.json's.
        "recipe": {k: None if part is None else part.state_dict() for k, part in
                   (("schedule", bench.trainer.schedule), ("selection", bench.trainer.selection))},
        # Images found unreadable so far (and when): a resumed run's dropped.csv, splits
        # and counts are the uninterrupted run's, whatever its remaining steps read.
        "unreadable": [{c: exp.unreadable()[c].astype(str).tolist() for c in DROP_COLUMNS}
                       for exp in bench.stream.experiences],
    }
    folder = checkpoint_dir(out)
    path = folder / f"step_{done}.pt"
    with atomic_file(path, "wb") as fh:
        if _fault("checkpoint", done):  # crash tests: killed with half of the file written
            buf = io.BytesIO()
            torch.save(state, buf)
            fh.write(buf.getvalue()[: buf.tell() // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save(state, fh)
    for older in folder.glob("step_*.pt"):  # only the newest is needed to resume
        if older != path:
            older.unlink()
    return path


def latest_checkpoint(out: Path) -> Path | None:
    files = sorted(checkpoint_dir(out).glob("step_*.pt"),
                   key=lambda p: int(p.stem.split("_")[1]))
    return files[-1] if files else None


def _comparable(config: dict) -> dict:
    """The config minus what may change between a run and its resumption (logging)."""
    return {k: v for k, v in config.items() if k != "log"}


def write_started(out: Path, config: dict) -> None:
    """Mark RUN_DIR as holding a run of `config` (before its first checkpoint exists)."""
    with atomic_file(Path(out) / STARTED) as fh:
        json.dump({"config": _comparable(config)}, fh, sort_keys=True)


def started_config(out: Path) -> dict | None:
    path = Path(out) / STARTED
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["config"]
    except (ValueError, KeyError):
        return {}  # unreadable: only another config could have written something else


def same_config(saved: dict, config: dict) -> bool:
    """A config as saved in JSON (started.json, results.json) against a run's config."""
    normal = json.loads(json.dumps(_comparable(config), sort_keys=True))
    return _comparable(saved) == normal


def start_over(out: Path, config: dict) -> None:
    """`--resume` without a checkpoint: the run starts from the beginning, discarding what
    an attempt killed before its first checkpoint wrote (a folder of another config is
    refused)."""
    out = Path(out)
    if not out.exists():
        return  # a new run: nothing to say
    saved = started_config(out)
    if saved is not None and not same_config(saved, config):
        raise UserError(f"{out / STARTED}: this folder holds a run started with another "
                        "config; resume it with the same config and overrides, or choose "
                        "another --out")
    if saved is not None:
        log.warning("%s: the run was stopped before its first experience finished (no "
                    "checkpoint); starting it again from the beginning", out)
    else:
        log.info("%s: no checkpoint to resume from; starting the run from the beginning", out)
    for name in ATTEMPT:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def clean_partial(out: Path) -> None:
    """Temporary files of writes a kill interrupted (never loaded: they are not renamed)."""
    for folder in (checkpoint_dir(out), Path(out) / "models"):
        for tmp in folder.glob(".*.pt.*") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, config: dict) -> dict:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise UserError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); "
                        "delete it to start the run again") from None
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {state.get('format')} is not {FORMAT}")
    if state["config"] != _comparable(config):
        raise UserError(f"{path}: this run was started with another config; resume it with "
                        "the same config and overrides, or choose another --out")
    return state


def restore(bench, state: dict, test: StagePredictions, val: StagePredictions | None) -> int:
    """Put a checkpoint back into a freshly prepared run; returns the steps already done."""
    strategy = bench.trainer.strategy
    model = strategy.model
    load_model_state(model, state["model"])
    if hasattr(model, "heads"):
        model.known_train_tasks_labels = set(state["known_tasks"])
    for plugin, saved in zip(bench.parts.plugins, state["plugins"], strict=True):
        if saved is not None:
            plugin.load_state_dict(saved)
    for k, v in state["clock"].items():
        setattr(strategy.clock, k, v)
    bench.trainer.losses.per_experience = [list(x) for x in state["train_loss"]]
    for key, part in (("schedule", bench.trainer.schedule),
                      ("selection", bench.trainer.selection)):
        saved = state.get("recipe", {}).get(key)
        if part is not None and saved is not None:
            part.load_state_dict(saved)
    for exp, saved in zip(bench.stream.experiences, state["unreadable"], strict=True):
        exp.add_dropped(list(zip(*(saved[c] for c in DROP_COLUMNS), strict=True)))
    _restore_predictions(test, state["test"])
    _restore_predictions(val, state["val"])
    # Avalanche resets the optimizer when a strategy first trains; put the saved state
    # back right after that, before any strategy plugin (PackNet) makes its own.
    strategy.plugins.insert(0, _OptimizerRestore(state["optimizer"]))
    set_rng_state(state["rng"])
    return int(state["done"])


def load_model_state(model: torch.nn.Module, state: dict) -> None:
    """Load weights into a freshly built model, first making the per-task heads it had."""
    if hasattr(model, "heads"):
        for t in sorted({k.split(".")[1] for k in state if k.startswith("heads.")}):
            if t not in model.heads:
                model.heads[t] = copy.deepcopy(model.initial_head)
    model.load_state_dict(state)


class _OptimizerRestore(SupervisedPlugin):
    def __init__(self, state: dict):
        super().__init__()
        self.state: dict | None = state

    def before_training_exp(self, strategy, **kwargs) -> None:
        if self.state is not None:
            strategy.optimizer.load_state_dict(self.state)
            self.state = None


class FaultInjector(SupervisedPlugin):
    """Sends the process a signal at a chosen moment: for crash tests.

    Enabled by the environment, IQACL_KILL_AT =
    - "<experience>:<iteration>[:KILL|INT]": at that training iteration of that experience;
    - "eval:<n>[:KILL|INT]": at the first evaluation minibatch once n experiences are
      trained (0: the evaluation before training; n: the one after experience n - 1);
    - "checkpoint:<step>": while `checkpoints/step_<step>.pt` is written, half of it on disk.
    SIGKILL by default; INT is a Ctrl-C.
    """

    def __init__(self, spec: str):
        super().__init__()
        where, at, *sig = spec.split(":")
        self.where, self.at = where, int(at)
        self.signal = getattr(signal, f"SIG{sig[0] if sig else 'KILL'}")

    def after_training_iteration(self, strategy, **kwargs) -> None:
        clock = strategy.clock
        if (self.where.isdigit() and clock.train_exp_counter == int(self.where)
                and clock.train_exp_iterations == self.at):
            os.kill(os.getpid(), self.signal)

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        if self.where == "eval" and strategy.clock.train_exp_counter == self.at:
            os.kill(os.getpid(), self.signal)


def _fault(where: str, at: int) -> bool:
    spec = os.environ.get("IQACL_KILL_AT", "").split(":")
    return len(spec) >= 2 and spec[0] == where and spec[1] == str(at)


def fault_from_env() -> list[Any]:
    spec = os.environ.get("IQACL_KILL_AT")
    return [FaultInjector(spec)] if spec else []  # `checkpoint:` is save_checkpoint's
