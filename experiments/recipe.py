"""The training recipe around the strategy: optimiser, learning-rate schedule, warm-up.

What the continual-BIQA field does per experience (docs/TRAINING.md): a fresh
Adam, a first stage in which only the head(s) train on a frozen backbone, then
the whole network, with a StepLR counted over both stages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from avalanche.core import SupervisedPlugin

from benchmarks.errors import UserError
from benchmarks.stream import Stream

from .selection import BestValidation

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, train: dict) -> torch.optim.Optimizer:
    """`train.optimizer` (adam | adamw | sgd) at `train.lr`, with `train.weight_decay`."""
    opt, lr, wd = train["optimizer"], train["lr"], train["weight_decay"]
    params = model.parameters()
    if opt["name"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=opt["momentum"],
                               nesterov=opt["nesterov"], weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


class LRSchedule(SupervisedPlugin):
    """The learning rate of each epoch, restarted at every experience (as the field does).

    `step`: lr x gamma every `step` epochs; `cosine`: from lr to 0 over the experience's
    epochs; `none`: constant. The epochs are counted over both stages of a warm-up. It
    is built on whatever optimizer the strategy trains with once every plugin's
    `before_training_exp` has run (PackNet makes a fresh one), so it is the last plugin.
    `lrs[k]`: the lr each epoch of experience k trained at.
    """

    def __init__(self, name: str = "none", step: int = 3, gamma: float = 0.1):
        super().__init__()
        self.name, self.step, self.gamma = name, step, gamma
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.lrs: dict[int, list[float]] = {}

    def before_training_exp(self, strategy, **kwargs) -> None:
        optimizer = strategy.optimizer
        base = optimizer.defaults["lr"]
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = base
        self.scheduler = None
        if self.name == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.step, self.gamma)
        elif self.name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=strategy.train_epochs)
        self.lrs[strategy.clock.train_exp_counter] = []

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self.lrs[strategy.clock.train_exp_counter].append(
            strategy.optimizer.param_groups[0]["lr"])
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"lrs": {k: list(v) for k, v in self.lrs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.lrs = {int(k): list(v) for k, v in state["lrs"].items()}


class FreshOptimizer(SupervisedPlugin):
    """Each experience starts with an empty optimizer state (no Adam moments carried
    over), as the field's code makes a new Adam per task."""

    def before_training_exp(self, strategy, **kwargs) -> None:
        strategy.optimizer.state.clear()


@dataclass(frozen=True)
class Stage:
    name: str          # "warmup" or "full"
    epochs: int
    batch_size: int
    heads_only: bool


def training_stages(epochs: int, batch_size: int, warmup_epochs: int = 0,
                    warmup_batch_size: int = 0) -> list[Stage]:
    """The stages of one experience: `warmup_epochs` of head(s) only, then the whole
    network for the rest of `epochs`."""
    stages = []
    if warmup_epochs:
        stages.append(Stage("warmup", warmup_epochs, warmup_batch_size or batch_size, True))
    if epochs - warmup_epochs:
        stages.append(Stage("full", epochs - warmup_epochs, batch_size, False))
    return stages


@contextmanager
def heads_only(model: torch.nn.Module) -> Iterator[None]:
    """Only the head(s) train: no gradient into the backbone, its BatchNorm in eval mode
    (running statistics untouched). Every flag is put back afterwards."""
    backbone = model.backbone
    flags = [p.requires_grad for p in backbone.parameters()]
    was_frozen = model.frozen_backbone
    for p in backbone.parameters():
        p.requires_grad_(False)
    model.frozen_backbone = True  # model.train() keeps the backbone in eval mode
    backbone.eval()
    try:
        yield
    finally:
        for p, flag in zip(backbone.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.frozen_backbone = was_frozen
        if not was_frozen:
            backbone.train(model.training)


def training_stds(config: dict, stream: Stream) -> dict[int, np.ndarray] | None:
    """Each experience's training rows' score stds on the targets' [-1, 1] scale, for the
    fidelity loss's continuous target; a dataset that has none is refused by name."""
    loss = config["loss"]
    if loss["name"] != "fidelity" or loss["target"] != "continuous":
        return None
    tables = {}
    for exp in stream.experiences:
        std = exp.part("train")["std"].to_numpy(dtype=np.float64)
        missing = int(np.isnan(std).sum())
        if missing == len(std):
            raise UserError(f"loss.target = continuous needs each image's score std, and "
                            f"{exp.name} ({exp.label_info.get('file', exp.source)}) has none; "
                            "use loss.target=binary, or leave that dataset out")
        if missing:
            log.warning("%s: %d training image(s) without a score std pair with nothing in "
                        "the fidelity loss", exp.name, missing)
        lo, hi = exp.scale
        tables[exp.task_label] = std * 2.0 / (hi - lo)
    return tables


def recipe_record(config: dict, names: list[str], schedule: LRSchedule | None,
                  selection: BestValidation | None) -> dict:
    """results.json's `training`: the recipe as run, and per step (`names`: the stream's
    experiences, or ["joint"]) each epoch's lr and the selection."""
    train, loss = config["train"], dict(config["loss"])
    if loss["name"] == "fidelity":
        loss = {k: loss[k] for k in ("name", "target", "eps")}
    else:
        loss = {k: loss[k] for k in ("name", "ranking_weight", "margin")}
    optimizer = dict(train["optimizer"])
    if optimizer["name"] != "sgd":
        optimizer = {"name": optimizer["name"]}
    lrs = schedule.lrs if schedule is not None else {}
    records = selection.records if selection is not None else {}
    per_exp = {}
    for k, name in enumerate(names):
        entry = {"lr": lrs.get(k)}
        if k in records:
            entry["selection"] = records[k]
        per_exp[name] = entry
    return {
        "loss": loss,
        "optimizer": {**optimizer, "lr": train["lr"], "weight_decay": train["weight_decay"],
                      "fresh_per_experience": train["fresh_optimizer"]},
        "schedule": dict(train["schedule"]) if train["schedule"]["name"] != "none"
        else {"name": "none"},
        "warmup": {"epochs": train["warmup_epochs"],
                   "batch_size": train["warmup_batch_size"] or train["batch_size"],
                   "trains": "head(s) only; backbone frozen, BatchNorm in eval mode"}
        if train["warmup_epochs"] else None,
        "epochs": train["epochs"], "batch_size": train["batch_size"],
        "select": train["select"],
        "per_experience": per_exp,
    }
