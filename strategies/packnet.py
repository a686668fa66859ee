"""PackNet (Mallya & Lazebnik, CVPR 2018) for any backbone (convolutional or transformer).

Avalanche's `PackNetModel` refuses BatchNorm, and most backbones have it.
This one follows the paper, which keeps batch-norm parameters per task:

- each weight matrix the backbone trains (convolutions, linear layers, attention
  projections) is *owned* by the task that kept it
  (or free); after training task k, a `prune_proportion` of the free weights
  with the smallest magnitude is released (set to zero), and the rest is
  retrained for `post_prune_epochs` and then frozen for good;
- every task keeps its own normalisation layers (BatchNorm with its running
  statistics, LayerNorm, GroupNorm) and its own head;
- evaluating task t uses exactly t's subnetwork: weights owned by tasks <= t,
  t's BatchNorm, t's head. Later training cannot change any of these, so old
  tasks' predictions stay bit-identical.

Other backbone parameters (biases, class tokens, position embeddings) are
shared: frozen after the first task. `shares()` reports how the parameters divide. A task
that has not been trained yet is evaluated with the live network and a fresh
head (as a multi-head model would).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.func import functional_call

from benchmarks.errors import UserError
from benchmarks.images.crops import ImageList, map_images
from models.iqa import MultiHeadIQAModel

from .passes import bookkeeping
from .registry import StrategyParts, register_strategy

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
# Attention projections held as raw parameters (torchvision's ViT uses nn.MultiheadAttention).
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
         *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
FREE = -1


class PackNetModel(MultiHeadIQAModel):
    """A multi-head quality model whose backbone is packed task by task."""

    task_features = True

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__(backbone, head)
        params = dict(backbone.named_parameters())
        self.weights = [f"{n}.weight" for n, m in backbone.named_modules()
                        if isinstance(m, PRUNABLE)]
        self.weights += [f"{n}.{a}" for n, m in backbone.named_modules()
                         if isinstance(m, nn.MultiheadAttention) for a in ATTENTION_WEIGHTS
                         if getattr(m, a, None) is not None]
        norm_modules = [n for n, m in backbone.named_modules() if isinstance(m, NORMS)]
        self.norm_keys = [k for n in norm_modules
                          for k, _ in _named_tensors(backbone.get_submodule(n), n)]
        self.shared = [n for n in params if n not in self.weights and n not in self.norm_keys]
        self.owner = {n: torch.full(params[n].shape, FREE, dtype=torch.int16)
                      for n in self.weights}
        self.frozen: dict[str, torch.Tensor] = {}     # values of owned weights and shared params
        self.norms: dict[int, dict[str, torch.Tensor]] = {}  # task -> BatchNorm state
        self.finished: list[int] = []
        self.released: dict[str, torch.Tensor] | None = None  # pruned in the current task

    @classmethod
    def wrap(cls, model: nn.Module) -> PackNetModel:
        head = model.initial_head if isinstance(model, MultiHeadIQAModel) else model.head
        packed = cls(model.backbone, copy.deepcopy(head))
        packed.mean, packed.std = model.mean, model.std
        packed.backbone_info = model.backbone_info
        return packed

    # -- the life of one task -------------------------------------------------------------
    def prune(self, proportion: float) -> None:
        """Release `proportion` of each layer's free weights, the smallest in magnitude."""
        if not 0 <= proportion < 1:
            raise UserError(f"packnet: prune_proportion {proportion} must be in [0, 1)")
        params = dict(self.backbone.named_parameters())
        self.released = {}
        with torch.no_grad():
            for name in self.weights:
                w = params[name]
                free = (self.owner[name] == FREE).to(w.device).flatten()
                idx = free.nonzero().squeeze(1)
                k = int(round(proportion * len(idx)))
                release = torch.zeros_like(free)
                if k:
                    order = w.flatten()[idx].abs().argsort(stable=True)
                    release[idx[order[:k]]] = True
                w.view(-1)[release] = 0.0
                self.released[name] = release.view(w.shape)

    def restore(self) -> None:
        """After every optimiser step: frozen values back, released weights back to zero."""
        params = dict(self.backbone.named_parameters())
        with torch.no_grad():
            for name, value in self.frozen.items():
                p = params[name]
                if name in self.owner:
                    keep = (self.owner[name] != FREE).to(p.device)
                    p.copy_(torch.where(keep, value.to(p.device), p))
                else:
                    p.copy_(value)
            for name, release in (self.released or {}).items():
                params[name].masked_fill_(release, 0.0)

    def finish(self, task: int) -> None:
        """Own the kept free weights, freeze them, keep this task's BatchNorm and head."""
        params = dict(self.backbone.named_parameters())
        for name in self.weights:
            released = self.released[name].cpu() if self.released else torch.zeros(
                self.owner[name].shape, dtype=torch.bool)
            self.owner[name][(self.owner[name] == FREE) & ~released] = task
        self.frozen = {n: params[n].detach().clone() for n in self.weights + self.shared}
        self.norms[task] = {k: v.detach().clone() for k, v in self._norm_state().items()}
        for p in self.heads[str(task)].parameters():
            p.requires_grad_(False)
        self.finished.append(task)
        self.released = None

    def _norm_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in _named_tensors(self.backbone, "") if k in self.norm_keys}

    # -- forward ----------------------------------------------------------------------------
    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        if isinstance(x, ImageList):  # whole images of several sizes: per size group
            return map_images(lambda b: self.forward_single_task(b, task_label), x)
        if task_label not in self.finished:
            return super().forward_single_task(x, task_label)
        params = dict(self.backbone.named_parameters())
        tensors = {}
        for name in self.weights:
            owner = self.owner[name].to(params[name].device)
            tensors[name] = params[name] * ((owner != FREE) & (owner <= task_label))
        norms = self.norms[task_label]
        # Training-mode BatchNorm would update the stored statistics in place.
        tensors.update({k: v.clone() if self.training else v for k, v in norms.items()})
        features = functional_call(self.backbone, tensors, (self.as_input(x),), strict=False)
        return self.heads[str(task_label)](features)

    # -- the state contract: all of it travels in model.state_dict() ---------------------
    def get_extra_state(self) -> dict:
        return {"owner": self.owner, "frozen": self.frozen, "norms": self.norms,
                "finished": list(self.finished)}

    def set_extra_state(self, state: dict) -> None:
        self.owner, self.frozen = dict(state["owner"]), dict(state["frozen"])
        self.norms, self.finished = dict(state["norms"]), list(state["finished"])

    def shares(self) -> dict:
        """How the backbone's parameters divide: pruned weight matrices (owned per task or
        still free), shared ones (frozen after the first task), per-task normalisation."""
        params = dict(self.backbone.named_parameters())
        total = sum(p.numel() for p in params.values())
        count = lambda names: sum(params[n].numel() for n in names if n in params)  # noqa: E731
        owned = self.used_fraction()
        prunable = count(self.weights)
        return {
            "prunable": prunable / total,
            "prunable_owned_by_task": {str(k): v for k, v in owned.items() if k != FREE},
            "prunable_free": owned.get(FREE, 0.0),
            "shared_frozen": count(self.shared) / total,
            "per_task_norms": count(self.norm_keys) / total,
        }

    def used_fraction(self) -> dict[int, float]:
        """Share of prunable weights each task owns (free weights under key -1)."""
        owners = torch.cat([o.flatten() for o in self.owner.values()]).long()
        counts = torch.bincount(owners + 1)
        return {i - 1: float(c) / len(owners) for i, c in enumerate(counts.tolist()) if c}


def _named_tensors(module: nn.Module, prefix: str):
    """Parameters and buffers of a module with their full names."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        yield (f"{prefix}.{name}" if prefix else name), t


class PackNetPlugin(SupervisedPlugin):
    """Calls PackNetModel's prune / restore / finish at the right moments.

    The last `post_prune_epochs` of each experience's `train.epochs` retrain
    after pruning, so `train.epochs` must be larger.
    """

    # Pruning zeroes weights and `finish` records each task's owners, frozen values and
    # BatchNorm state (the model's extra state): changes to the model, declared.
    changes_model = True

    def __init__(self, prune_proportion: float | Sequence[float] = 0.5,
                 post_prune_epochs: int = 1):
        super().__init__()
        self.prune_proportion = prune_proportion
        self.post_prune_epochs = post_prune_epochs
        self._pruned = False

    def proportion(self, task_index: int) -> float:
        p = self.prune_proportion
        if isinstance(p, (list, tuple)):
            return float(p[min(task_index, len(p) - 1)])
        return float(p)

    def check_config(self, config: dict) -> None:
        """Before the model or data: the run would stop at its first experience."""
        train = config["train"]
        self._check_epochs(train["epochs"])
        if train["warmup_epochs"] > train["epochs"] - self.post_prune_epochs:
            raise UserError(f"packnet: it prunes before the last {self.post_prune_epochs} "
                            f"epoch(s), inside the {train['warmup_epochs']}-epoch heads-only "
                            "warm-up; lower train.warmup_epochs or strategy.post_prune_epochs")

    def _check_epochs(self, epochs: int) -> None:
        if self.post_prune_epochs >= epochs:
            raise UserError(f"packnet: strategy.post_prune_epochs ({self.post_prune_epochs}) "
                            f"must be less than train.epochs ({epochs}); raise train.epochs "
                            "or set strategy.post_prune_epochs=0")

    def before_training(self, strategy, **kwargs) -> None:
        if not isinstance(strategy.model, PackNetModel):
            raise UserError("packnet: the model must be a PackNetModel (the strategy wraps it)")
        self._check_epochs(strategy.train_epochs)

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._pruned = False
        # A fresh optimiser: no momentum from the last task pushes on pruned weights.
        strategy.optimizer = strategy.optimizer.__class__(
            strategy.model.parameters(), **strategy.optimizer.defaults)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_epochs == strategy.train_epochs - self.post_prune_epochs:
            self._prune(strategy)
            if getattr(strategy, "selection", None) is not None:
                # train.select=best_val: an epoch before pruning is not a pruned network
                strategy.selection.restart("packnet pruned the network")

    def _prune(self, strategy) -> None:
        # Magnitudes only, no forward pass; in `bookkeeping` all the same, so that a
        # data-driven criterion put here could not move BatchNorm's statistics.
        with bookkeeping(strategy.model) as model:
            model.prune(self.proportion(strategy.clock.train_exp_counter))
        self._pruned = True

    def after_update(self, strategy, **kwargs) -> None:
        strategy.model.restore()

    def after_training_exp(self, strategy, **kwargs) -> None:
        if not self._pruned:
            self._prune(strategy)
        strategy.model.finish(strategy.experience.task_label)


# prune_proportion = 0.1 chosen by `make search` on the demo stream's validation splits.
@register_strategy("packnet", uses_task_labels=True, multi_head=True)
def packnet(prune_proportion: float | list = 0.1, post_prune_epochs: int = 1) -> StrategyParts:
    """PackNet with per-task BatchNorm and heads: per-task subnetworks, no forgetting."""
    return StrategyParts([PackNetPlugin(prune_proportion, post_prune_epochs)],
                         wrap_model=PackNetModel.wrap)
