"""TSN: task-specific normalisation (Zhang et al., TIP 2024, TSN-IQA).

The backbone's convolutions (every parameter but BatchNorm's) stay at their
pretrained values. Each task has its own BatchNorm set (affine weights and
running statistics) and its own head; a new task's set starts from the
pretrained one, not the previous task's. After a task its set and head are
never touched again, so nothing forgets: an old task's predictions under
`eval.heads: oracle` are bit-identical after every later task. Scoring
without task labels (`eval.heads: weighted`) takes one forward pass per seen
task, each with that task's BatchNorm set. Like PackNet with per-task
BatchNorm, but nothing is pruned or trained in the convolutions at all.
"""

from __future__ import annotations

import copy

import torch
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.func import functional_call

from benchmarks.errors import UserError
from benchmarks.images.crops import ImageList, map_images
from models.iqa import MultiHeadIQAModel

from .registry import StrategyParts, register_strategy

BATCHNORM = nn.modules.batchnorm._BatchNorm


class TSNModel(MultiHeadIQAModel):
    """A multi-head model with frozen convolutions and one BatchNorm set per task."""

    task_features = True

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__(backbone, head)
        names = [n for n, m in backbone.named_modules() if isinstance(m, BATCHNORM)]
        if not names:
            raise UserError("tsn: the backbone has no BatchNorm layer to make per task; "
                            "choose a backbone with BatchNorm (resnet18, mobilenet_v2, ...)")
        self.norm_keys = [f"{n}.{k}" for n in names for k, _ in
                          [*backbone.get_submodule(n).named_parameters(),
                           *backbone.get_submodule(n).named_buffers()]]
        for name, p in backbone.named_parameters():
            p.requires_grad_(name in self.norm_keys)
        self.initial_norms = {k: v.detach().clone() for k, v in self._norm_state().items()}
        self.norms: dict[int, dict[str, torch.Tensor]] = {}  # task -> its BatchNorm set
        self.finished: list[int] = []

    @classmethod
    def wrap(cls, model: nn.Module) -> TSNModel:
        head = model.initial_head if isinstance(model, MultiHeadIQAModel) else model.head
        tsn = cls(model.backbone, copy.deepcopy(head))
        tsn.mean, tsn.std, tsn.backbone_info = model.mean, model.std, model.backbone_info
        return tsn

    def _norm_state(self) -> dict[str, torch.Tensor]:
        tensors = {**dict(self.backbone.named_parameters()), **dict(self.backbone.named_buffers())}
        return {k: tensors[k] for k in self.norm_keys}

    def start(self) -> None:
        """The live BatchNorm set back to the pretrained one, for a new task."""
        with torch.no_grad():
            for k, t in self._norm_state().items():
                t.copy_(self.initial_norms[k].to(t.device))

    def finish(self, task: int) -> None:
        """Keep the task's BatchNorm set and freeze its head."""
        self.norms[task] = {k: v.detach().clone() for k, v in self._norm_state().items()}
        for p in self.heads[str(task)].parameters():
            p.requires_grad_(False)
        if task not in self.finished:
            self.finished.append(task)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        if isinstance(x, ImageList):  # whole images of several sizes: per size group
            return map_images(lambda b: self.forward_single_task(b, task_label), x)
        # The task being trained, or one not trained yet (as PackNet: the live set and a
        # fresh head).
        if task_label not in self.finished:
            return super().forward_single_task(x, task_label)
        norms = self.norms[task_label]
        # Training-mode BatchNorm would update the stored statistics in place.
        tensors = {k: v.clone() if self.training else v for k, v in norms.items()}
        features = functional_call(self.backbone, tensors, (self.as_input(x),), strict=False)
        return self.heads[str(task_label)](features)

    def shares(self) -> dict:
        params = dict(self.backbone.named_parameters())
        total = sum(p.numel() for p in params.values())
        per_task = sum(params[k].numel() for k in self.norm_keys if k in params)
        return {"frozen": 1 - per_task / total, "per_task_norms": per_task / total}

    # -- the state contract: all of it travels in model.state_dict() ---------------------
    def get_extra_state(self) -> dict:
        return {"norms": self.norms, "finished": list(self.finished),
                "initial_norms": self.initial_norms}

    def set_extra_state(self, state: dict) -> None:
        self.norms, self.finished = dict(state["norms"]), list(state["finished"])
        self.initial_norms = dict(state["initial_norms"])


class TSNPlugin(SupervisedPlugin):
    """A fresh BatchNorm set before each task; the task's set and head kept after it."""

    changes_model = True  # the per-task sets live in the model's extra state

    def before_training_exp(self, strategy, **kwargs) -> None:
        if not isinstance(strategy.model, TSNModel):
            raise UserError("tsn: the model must be a TSNModel (the strategy wraps it)")
        strategy.model.start()

    def after_training_exp(self, strategy, **kwargs) -> None:
        strategy.model.finish(strategy.experience.task_label)


@register_strategy("tsn", uses_task_labels=True, multi_head=True)
def tsn() -> StrategyParts:
    """Task-specific normalisation: frozen convolutions, one BatchNorm set + head per task."""
    return StrategyParts([TSNPlugin()], wrap_model=TSNModel.wrap)
