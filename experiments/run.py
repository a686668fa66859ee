"""One benchmark run: stream -> model -> strategy -> forgetting matrices -> RUN_DIR.

The run evaluates every experience's test set before training and after each
experience, which gives the T x T matrices (row i: after training experience
i; column j: evaluated on experience j) and the initial row.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import loss_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from benchmarks.errors import UserError
from benchmarks.metric_plugins import PredictionRecorder, correlation_metrics
from benchmarks.stream import Stream, build_stream
from models import IQALoss, build_model
from strategies import get_strategy, make_strategy

from .results import StagePredictions, write_run

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
    return build_stream(config["stream"], seed=config["seed"], image_size=data["image_size"],
                        test_fraction=data["test_fraction"], val_fraction=data["val_fraction"],
                        crop_scale=data["crop_scale"])


def model_from_config(config: dict) -> torch.nn.Module:
    m = config["model"]
    return build_model(m["backbone"], m["pretrained"], m["head"], m["embed_dim"], m["heads"])


class EpochLoss(SupervisedPlugin):
    """Mean training loss per epoch, one list per experience (kept for results.json)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_experience: list[list[float]] = []
        self._sum, self._n = 0.0, 0

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.per_experience.append([])

    def after_training_iteration(self, strategy, **kwargs) -> None:
        n = len(strategy.mb_y)
        self._sum += float(strategy.loss.detach()) * n
        self._n += n

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self.per_experience[-1].append(self._sum / max(self._n, 1))
        self._sum, self._n = 0.0, 0


@dataclass
class Trainer:
    """An Avalanche training template with the suite's metrics and recorders attached."""

    strategy: SupervisedTemplate
    recorder: PredictionRecorder
    losses: EpochLoss
    num_workers: int = 0

    def evaluate(self, stream) -> dict[int, tuple]:
        """Evaluate every experience of `stream`: {experience id: (rows, targets, preds)}."""
        self.strategy.eval(stream, num_workers=self.num_workers)
        return {k[1]: v for k, v in self.recorder.results.items() if k[0] == stream.name}

    def train(self, experience) -> None:
        self.strategy.train(experience, num_workers=self.num_workers)


def make_trainer(config: dict, model: torch.nn.Module, plugins: list,
                 device: torch.device) -> Trainer:
    train, evalc = config["train"], config["eval"]
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"],
                                 weight_decay=train["weight_decay"])
    loggers = [InteractiveLogger()] if config["log"]["progress"] else []
    with warnings.catch_warnings():  # "no loggers" is a choice here (log.progress=false)
        warnings.simplefilter("ignore")
        evaluator = EvaluationPlugin(
            *correlation_metrics(evalc["plcc_fit"]),
            loss_metrics(epoch=True),
            loggers=loggers,
        )
    recorder, losses = PredictionRecorder(), EpochLoss()
    strategy = SupervisedTemplate(
        model=model, optimizer=optimizer,
        criterion=IQALoss(config["loss"]["ranking_weight"], config["loss"]["margin"]),
        train_mb_size=train["batch_size"], train_epochs=train["epochs"],
        eval_mb_size=evalc["batch_size"], device=device,
        plugins=[*plugins, recorder, losses], evaluator=evaluator,
    )
    return Trainer(strategy, recorder, losses, config["data"]["num_workers"])


def run(config: dict, out: str | Path) -> dict:
    """Run one benchmark described by a validated config; write RUN_DIR; return results."""
    out = Path(out)
    if (out / "results.json").exists():
        raise UserError(f"{out} already holds a finished run (results.json); choose another "
                        "--out, or delete that folder to redo it")
    started = time.time()
    seed_everything(config["seed"])
    spec = get_strategy(config["strategy"]["name"])
    if spec.protocol != "stream":
        raise UserError(f"strategy '{spec.name}' uses the '{spec.protocol}' protocol, which "
                        "this version of the runner does not support yet")
    hparams = {k: v for k, v in config["strategy"].items() if k != "name"}
    parts = make_strategy(spec.name, **hparams)
    device = pick_device(config["train"]["device"])
    # Everything that can fail on bad input happens before RUN_DIR is touched.
    stream = stream_from_config(config)
    model = model_from_config(config)
    if parts.wrap_model is not None:
        model = parts.wrap_model(model)
    trainer = make_trainer(config, model, parts.plugins, device)
    bm = stream.benchmark
    evaluate_val = config["eval"]["validation"] and all(len(e.split.val) for e in
                                                          stream.experiences)

    test = StagePredictions(stream.experiences)
    val = StagePredictions(stream.experiences)
    test.add("initial", trainer.evaluate(bm.test_stream))
    for i, experience in enumerate(bm.train_stream):
        log.info("training on experience %d: %s", i, stream.names[i])
        trainer.train(experience)
        test.add(f"after_{i}", trainer.evaluate(bm.test_stream))
        if evaluate_val:
            val.add(f"after_{i}", trainer.evaluate(bm.valid_stream))

    uses_task_labels = spec.uses_task_labels or config["model"]["heads"] == "per_task"
    return write_run(
        out, config=config, stream=stream, test=test, val=val if evaluate_val else None,
        protocol=spec.protocol, uses_task_labels=uses_task_labels,
        train_loss=trainer.losses.per_experience, wall_time_s=time.time() - started,
        device=str(device),
    )
