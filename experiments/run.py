"""One benchmark run: stream -> model -> strategy -> forgetting matrices -> RUN_DIR.

The run evaluates every experience's test set before training and after each
experience, which gives the T x T matrices (row i: after training experience
i; column j: evaluated on experience j) and the initial row.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin

from benchmarks.errors import UserError
from benchmarks.features import feature_stream
from benchmarks.images.cache import ImageCache, eval_resize
from benchmarks.images.gpu_decode import JpegDecoder
from benchmarks.metrics.plugins import (
    EpochLoss,
    PredictionRecorder,
    UnreadableRecorder,
    correlation_metrics,
)
from benchmarks.stream import Stream, build_stream, check_dropped, joint_experience
from models import make_loss
from models.iqa import MultiHeadIQAModel
from strategies import StrategyParts, StrategySpec, get_strategy, make_strategy
from strategies.routing import TASK_AWARE, HeadRouting, check_heads

from .checkpoint import (
    STARTED,
    clean_partial,
    fault_from_env,
    latest_checkpoint,
    load_checkpoint,
    restore,
    same_config,
    save_checkpoint,
    start_over,
    started_config,
    write_started,
)
from .loggers import CSVMetricLogger
from .memory import strategy_memory
from .model_setup import model_from_config
from .recipe import FreshOptimizer, LRSchedule, make_optimizer, recipe_record, training_stds
from .results import StagePredictions, atomic_file, routing_record, write_plots, write_run
from .selection import BestValidation, ValidationCurve
from .template import IQATemplate
from .wandb_log import WandbLogger

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device = {name}, but no CUDA device is available; use cpu")
    return torch.device(name)


def stream_from_config(config: dict) -> Stream:
    data = config["data"]
    cache = None
    if data["cache"]:
        cache = ImageCache(data["cache_dir"] or None, eval_resize(data["image_size"]),
                           workers=data["num_workers"], progress=config["log"]["progress"])
    return build_stream(config["stream"], seed=config["seed"], image_size=data["image_size"],
                        test_fraction=data["test_fraction"], val_fraction=data["val_fraction"],
                        crop_scale=data["crop_scale"],
                        max_dropped_fraction=data["max_dropped_fraction"], cache=cache,
                        augment=not config["model"]["freeze_backbone"],
                        gpu_decode=data["decode"] == "gpu", val_of=data["val_fraction_of"],
                        split=data["split"], transform=data["transform"],
                        adaptive_resize=data["adaptive_resize"], crop_eval=data["crop_eval"])


@dataclass
class Trainer:
    """An Avalanche training template with the suite's metrics and recorders attached."""

    strategy: IQATemplate
    recorder: PredictionRecorder
    losses: EpochLoss
    unreadable: UnreadableRecorder
    num_workers: int = 0
    schedule: LRSchedule | None = None
    selection: BestValidation | None = None

    def evaluate(self, stream, name: str = "") -> dict[int, tuple]:
        """Evaluate every experience of `stream` (or of a list of experiences of the stream
        `name`): {experience id: (rows, targets, preds)}."""
        self.recorder.results.clear()
        self.strategy.eval(stream, **self.loader_args())
        name = name or stream.name
        return {k[1]: v for k, v in self.recorder.results.items() if k[0] == name}

    def train(self, experience) -> None:
        self.strategy.train(experience, **self.loader_args())

    def loader_args(self) -> dict:
        # Workers live for the whole experience (all epochs), not one epoch;
        # pinned memory is Avalanche's default on CUDA.
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}


def make_trainer(config: dict, model: torch.nn.Module, plugins: list,
                 device: torch.device, loggers: list | None = None,
                 names: list[str] | None = None) -> Trainer:
    train, evalc = config["train"], config["eval"]
    optimizer = make_optimizer(model, train)
    # The recipe's plugins come after the strategy's: the schedule takes whatever optimizer
    # the strategy trains with (PackNet makes its own at each experience).
    schedule = LRSchedule(**train["schedule"])
    recipe = [schedule, *([FreshOptimizer()] if train["fresh_optimizer"] else [])]
    selection = None
    if train["select"] == "best_val":
        selection = BestValidation(evaluate=lambda exps: {}, names=names or [])
    loggers = list(loggers or [])
    if config["log"]["progress"]:
        loggers.append(InteractiveLogger())
    with warnings.catch_warnings():  # "no loggers" is a choice here (log.progress=false)
        warnings.simplefilter("ignore")
        evaluator = EvaluationPlugin(
            *correlation_metrics(evalc["plcc_fit"]),
            losses := EpochLoss(),
            *([ValidationCurve(selection)] if selection is not None else []),
            loggers=loggers,
        )
    recorder, unreadable = PredictionRecorder(), UnreadableRecorder()
    data = config["data"]
    decoder = None
    if data["decode"] == "gpu":
        decoder = JpegDecoder(data["image_size"], data["crop_scale"], device)
    strategy = IQATemplate(
        model=model, optimizer=optimizer,
        criterion=make_loss(config["loss"]),
        train_mb_size=train["batch_size"], train_epochs=train["epochs"],
        eval_mb_size=evalc["batch_size"], device=device,
        plugins=[*plugins, recorder, unreadable, *recipe], evaluator=evaluator,
        amp=train["amp"], decoder=decoder, warmup_epochs=train["warmup_epochs"],
        warmup_mb_size=train["warmup_batch_size"], selection=selection,
    )
    return Trainer(strategy, recorder, losses, unreadable, config["data"]["num_workers"],
                   schedule, selection)


@dataclass
class Benchmark:
    """Everything one run builds, ready to train: the stream, the strategy, the trainer."""

    config: dict
    spec: StrategySpec
    parts: StrategyParts
    stream: Stream
    trainer: Trainer
    device: torch.device
    wandb: WandbLogger | None = None
    loggers: list | None = None

    @property
    def step(self) -> int:
        return self.trainer.strategy.clock.train_iterations

    @property
    def uses_task_labels(self) -> bool:
        # A multi-head model (model.heads=per_task, or a strategy's own): eval.heads decides.
        if isinstance(self.trainer.strategy.model, MultiHeadIQAModel):
            return TASK_AWARE[self.config["eval"]["heads"]]
        return self.spec.uses_task_labels

    @property
    def router(self) -> HeadRouting | None:
        return next((p for p in self.parts.plugins if isinstance(p, HeadRouting)), None)


def make_loggers(config: dict, out: Path | None,
                 resume_step: int | None = None) -> tuple[list, WandbLogger | None]:
    """The loggers a config asks for; they write into RUN_DIR, so only once it is known.

    `resume_step`: the training iteration a resumed run continues from; metrics.csv keeps
    its rows up to there (the interrupted step's rows are logged again)."""
    if out is None:
        return [], None
    opts, loggers, wandb_logger = config["log"], [], None
    if opts["csv"]:
        loggers.append(CSVMetricLogger(out / "metrics.csv", keep_until=resume_step))
    if opts["tensorboard"]:
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(str(out / "tensorboard")))
    w = opts["wandb"]
    if w["enabled"]:
        wandb_logger = WandbLogger(config, out, mode=w["mode"], project=w["project"],
                                   entity=w["entity"], group=w["group"], tags=w["tags"],
                                   name=w["name"])
        loggers.append(wandb_logger)
    return loggers, wandb_logger


def prepare(config: dict, out: Path | None = None, resume_step: int | None = None
            ) -> Benchmark:
    """Build stream, model, strategy and trainer; every bad-input error happens here.

    Loggers that write into `out` are made last, after every check has passed.
    """
    seed_everything(config["seed"])
    spec = get_strategy(config["strategy"]["name"])
    hparams = {k: v for k, v in config["strategy"].items() if k != "name"}
    parts = make_strategy(spec.name, **hparams)
    if config["eval"]["heads"] != "oracle":
        parts.plugins.append(HeadRouting(config["eval"]["heads"], seed=config["seed"],
                                         pretrained=config["model"]["pretrained"],
                                         **config["eval"]["routing"]))
    for plugin in parts.plugins:  # a plugin's own checks of the config, before any work
        if hasattr(plugin, "check_config"):
            plugin.check_config(config)
    device = pick_device(config["train"]["device"])
    if config["train"]["amp"] and device.type != "cuda":
        log.warning("train.amp (bf16, channels_last) applies on CUDA only; this run on %s "
                    "is fp32", device.type)
    frozen = config["model"]["freeze_backbone"]
    if frozen and parts.wrap_model is not None:
        raise UserError(f"strategy '{spec.name}' changes the backbone; it cannot be combined "
                        "with model.freeze_backbone=true")
    if config["data"]["decode"] == "gpu" and any(getattr(p, "reads_dataset", False)
                                                 for p in parts.plugins):
        raise UserError(f"strategy '{spec.name}' reads the experience's images itself and "
                        "cannot take JPEG bytes; with it use data.decode=cpu (data.cache=true "
                        "is the fast path)")
    # The model first: an unknown name, missing weights or a wrong input size stop the run
    # before any data is read.
    model = model_from_config(config)
    stream = stream_from_config(config)
    batch, n = config["train"]["batch_size"], len(stream.experiences)
    if batch < n and (spec.protocol == "joint" or any(getattr(p, "mixes_experiences", False)
                                                      for p in parts.plugins)):
        raise UserError(f"train.batch_size = {batch}: strategy '{spec.name}' trains on the "
                        f"stream's {n} experiences at once, and each minibatch takes images "
                        f"from every one (Avalanche's task-balanced loader); use "
                        f"train.batch_size={n} or more")
    if parts.wrap_model is not None:
        model = parts.wrap_model(model)
    for plugin in parts.plugins:  # before any training or --resume: the initial model
        if hasattr(plugin, "see_initial_model"):  # (the routing network; single's start)
            plugin.see_initial_model(model)
    check_heads(config["eval"]["heads"], spec.name, spec.protocol, model)
    if frozen and config["model"]["cache_features"]:
        stream = cached_features(config, stream, model, device)
    std_tables = training_stds(config, stream)
    loggers, wandb_logger = make_loggers(config, out, resume_step)
    trainer = make_trainer(config, model, [*parts.plugins, *fault_from_env()], device, loggers,
                           stream.names)
    if std_tables is not None:
        trainer.strategy._criterion.set_std(std_tables)
    return Benchmark(config, spec, parts, stream, trainer, device, wandb_logger, loggers)


def cached_features(config: dict, stream: Stream, model: torch.nn.Module,
                    device: torch.device) -> Stream:
    """The stream as frozen-backbone features: the backbone runs once per image."""
    model.backbone.to(device).eval()
    amp = config["train"]["amp"] and device.type == "cuda"
    if amp:
        model.backbone.to(memory_format=torch.channels_last)

    def embed(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return model.features(x.contiguous(memory_format=torch.channels_last) if amp else x)

    data = config["data"]
    return feature_stream(stream, embed, config["eval"]["batch_size"], device,
                          data["num_workers"])


def train_and_evaluate(bench: Benchmark, out: Path | None = None, state: dict | None = None,
                       ) -> tuple[StagePredictions, StagePredictions | None]:
    """Evaluate all test sets before training and after each step (stream or joint).

    With `out`, a checkpoint is written after each step; with `state` (a loaded
    checkpoint), the run continues after the steps it had finished.
    """
    stream, trainer = bench.stream, bench.trainer
    bm = stream.benchmark
    # Validation: the experiences that have a validation split (the rest are said, once).
    with_val = [j for j, e in enumerate(stream.experiences) if e.split.val]
    evaluate_val = bench.config["eval"]["validation"] and bool(with_val)
    test = StagePredictions(stream.experiences)
    val = StagePredictions(stream.experiences, with_val) if evaluate_val else None
    valid = [bm.valid_stream[j] for j in with_val]
    selection = trainer.selection
    if selection is not None:
        selection.evaluate = lambda exps: trainer.evaluate(exps, bm.valid_stream.name)
    for exp in stream.experiences if bench.config["eval"]["validation"] else []:
        if exp.no_val():
            log.warning(exp.no_val())
    if state is not None:
        done = restore(bench, state, test, val)
        log.info("resuming after %d finished step(s)", done)
    else:
        done = 0
        test.add("initial", trainer.evaluate(bm.test_stream))
        record_unreadable(bench, "initial")
    if bench.spec.protocol == "joint":
        # One model on the union of all training sets; one evaluation row.
        steps = [("joint", joint_experience(stream), "all experiences")]
    else:
        steps = [(f"after_{i}", exp, stream.names[i]) for i, exp in enumerate(bm.train_stream)]
    for i, (stage, experience, name) in enumerate(steps[done:], start=done):
        log.info("training on %s", name)
        if selection is not None:  # the validation split(s) of what this step trains on
            selection.targets = (valid if stage == "joint" else
                                 [bm.valid_stream[i]] if i in with_val else [])
        trainer.train(experience)
        test.add(stage, trainer.evaluate(bm.test_stream))
        if val is not None:
            val.add(stage, trainer.evaluate(valid, bm.valid_stream.name))
        if bench.wandb is not None:
            bench.wandb.log_matrix(partial_results(bench, test), bench.step)
        record_unreadable(bench, stage)
        if out is not None:
            with atomic_file(out / "models" / f"{stage}.pt", "wb") as fh:
                torch.save(trainer.strategy.model.state_dict(), fh)  # for `iqacl predict`
            save_checkpoint(out, bench, i + 1, test, val)
    return test, val


def model_info(bench: Benchmark) -> dict:
    """The backbone a run used (name, weights tag, file, sha256, normalisation) and, for
    PackNet and TSN, how its parameters divide (frozen, shared, per task), under the
    strategy's name."""
    model = bench.trainer.strategy.model
    info = dict(model.backbone_info or {})
    if hasattr(model, "shares"):
        info[bench.spec.name] = model.shares()
    return info


def record_unreadable(bench: Benchmark, stage: str) -> None:
    """Images that failed to decode during `stage`: into `dropped`, and stop if too many."""
    by_key: dict[tuple[int, str], list[int]] = {}
    for task, part, row in bench.trainer.unreadable.seen:
        by_key.setdefault((task, part), []).append(row)
    for (task, part), rows in sorted(by_key.items()):
        exp = bench.stream.experiences[task]
        if exp.mark_unreadable(part, sorted(rows), stage):
            log.warning("%s: %d unreadable image(s) skipped so far (see dropped.csv)",
                        exp.name, exp.unreadable_count())
        check_dropped(exp, bench.config["data"]["max_dropped_fraction"])


def partial_results(bench: Benchmark, test: StagePredictions) -> dict:
    """The matrix so far, shaped like results.json (for loggers)."""
    fit = bench.config["eval"]["plcc_fit"]
    return {
        "experiences": bench.stream.names, "protocol": bench.spec.protocol,
        "strategy": bench.spec.name, "uses_task_labels": bench.uses_task_labels,
        "initial": {m: test.row("initial", m, fit) for m in ("srcc", "plcc")},
        "matrices": {m: test.matrix(m, fit) for m in ("srcc", "plcc")},
    }


def _check_writable(out: Path) -> None:
    """Fail before any training if RUN_DIR cannot be written (without creating it)."""
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the run folder {out} ({existing} is not a writable "
                        "folder); choose another --out")


def finished(config: dict, out: Path) -> dict:
    """`--resume` on a finished run: its results, and what a kill after results.json left
    undone (plots redrawn, checkpoints removed); a run of another config is refused."""
    results = json.loads((out / "results.json").read_text())
    if not same_config(results["config"], config):  # compared without `log`
        raise UserError(f"{out} holds a finished run of another config (results.json); "
                        "choose another --out")
    log.info("%s: the run has finished already; nothing to resume", out)
    if config["log"]["plots"]:
        write_plots(results, out)
    if config["log"]["report"]:
        from .report import try_run_report

        try_run_report(out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / STARTED).unlink(missing_ok=True)
    return results


def run(config: dict, out: str | Path, resume: bool = False) -> dict:
    """Run one benchmark described by a validated config; write RUN_DIR; return results.

    `resume=True` continues an interrupted run in the same RUN_DIR from its last
    checkpoint (after the last finished experience); without a checkpoint (killed before
    the first one, or never started) it starts the run from the beginning, so a script
    may always pass it.
    """
    out = Path(out)
    if (out / "results.json").exists():
        if resume:  # nothing left to do (a kill may have come after results.json)
            return finished(config, out)
        raise UserError(f"{out} already holds a finished run (results.json); choose another "
                        "--out, or delete that folder to redo it")
    _check_writable(out)
    checkpoint = latest_checkpoint(out)
    if not resume and (checkpoint is not None or started_config(out) is not None):
        what, then = ((checkpoint.name, "continue it") if checkpoint else
                      ("stopped before its first checkpoint", "start it again from the beginning"))
        raise UserError(f"{out} holds an unfinished run ({what}); add --resume to {then}, "
                        "or choose another --out")
    state = None
    if resume and checkpoint is not None:
        state = load_checkpoint(checkpoint, config)
    elif resume:  # killed before its first checkpoint, or never started: from the beginning
        start_over(out, config)
    clean_partial(out)
    started = time.time()
    # Nothing is written before this succeeds; metrics.csv keeps the checkpointed steps' rows.
    bench = prepare(config, out, resume_step=state["clock"]["train_iterations"] if state
                    else None)
    write_started(out, config)
    test, val = train_and_evaluate(bench, out, state)
    results = write_run(
        out, config=config, stream=bench.stream, test=test, val=val,
        protocol=bench.spec.protocol, uses_task_labels=bench.uses_task_labels,
        train_loss=bench.trainer.losses.per_experience, wall_time_s=time.time() - started,
        device=str(bench.device), memory=strategy_memory(bench), model=model_info(bench),
        threads=torch.get_num_threads(), routing=routing_record(bench.router, test),
        training=recipe_record(bench.config,
                               ["joint"] if bench.spec.protocol == "joint" else bench.stream.names,
                               bench.trainer.schedule, bench.trainer.selection),
    )
    # The models of each stage stay (models/); the checkpoints were only for resuming.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / STARTED).unlink(missing_ok=True)
    if bench.wandb is not None:
        bench.wandb.finish(results, out, bench.step)
    for logger in bench.loggers or []:
        if hasattr(logger, "close"):
            logger.close()
    return results
