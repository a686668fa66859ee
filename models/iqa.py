"""The quality model: backbone -> head -> one score per image, shape (B,).

The default head follows the seed prototype: project features to an
embedding, L2-normalise it, and score an image by its cosine similarity to a
learnable "positive" direction, so scores live in [-1, 1] like the targets
(each dataset's scale mapped to [-1, 1]).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from avalanche.models import MultiTaskModule
from torch import nn

from benchmarks.errors import UserError
from benchmarks.images.crops import ImageList, map_images

from .backbone_base import IMAGENET
from .backbones import build_backbone

IMAGENET_MEAN, IMAGENET_STD = IMAGENET

HEADS = ("similarity", "regression")


class SimilarityHead(nn.Module):
    """Cosine similarity between the normalised embedding and a learnable direction."""

    def __init__(self, in_features: int, embed_dim: int = 128):
        super().__init__()
        self.proj = nn.Linear(in_features, embed_dim)
        self.positive = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(features), p=2, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed(features) @ F.normalize(self.positive, p=2, dim=0)


class RegressionHead(nn.Module):
    """A plain linear score, the usual alternative to the similarity head."""

    def __init__(self, in_features: int, embed_dim: int = 128):
        super().__init__()
        self.fc = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features).squeeze(-1)


def make_head(kind: str, in_features: int, embed_dim: int) -> nn.Module:
    if kind == "similarity":
        return SimilarityHead(in_features, embed_dim)
    if kind == "regression":
        return RegressionHead(in_features, embed_dim)
    raise UserError(f"unknown head '{kind}'; choose one of {list(HEADS)}")





def normalise_uint8(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 images -> normalised floats, the same arithmetic as ToTensor + Normalize."""
    return normalise(x.float().div(255), mean, std)


def normalise(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """[0, 1] float images -> normalised, the same arithmetic as torchvision's Normalize."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub(mean).div_(std)


class BackboneMixin:
    """What the model takes: images (uint8, or floats in [0, 1]), or backbone features.

    Images are normalised here, on the device, with the backbone's own mean and
    std (its pretrained configuration: CLIP-style models differ from ImageNet's):
    uint8 ones (image cache, nvJPEG) are a quarter of the bytes through the loader
    and the host-to-device copy. Features (B, F) skip the backbone, so a frozen
    backbone can run once per image (the feature cache); a frozen backbone stays
    in eval mode.
    """

    frozen_backbone = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    backbone_info: dict | None = None  # name, source, weights tag / file / sha256

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return normalise_uint8(x, self.mean, self.std)
        return normalise(x, self.mean, self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, ImageList):  # whole images of several sizes: per size group
            return map_images(self.features, x)
        return x if x.dim() == 2 else self.backbone(self.as_input(x))

    @staticmethod
    def crops_of(x: torch.Tensor) -> int:
        """Crops per image in a (B, K, 3, H, W) batch (the five-crop evaluation), else 0."""
        return x.shape[1] if not isinstance(x, ImageList) and x.dim() == 5 else 0

    def freeze_backbone(self) -> None:
        """Linear probe: no gradients into the backbone, BatchNorm statistics fixed."""
        self.frozen_backbone = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self


class IQAModel(BackboneMixin, nn.Module):
    """One shared head: the model never sees a task label (domain-incremental)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if k := self.crops_of(x):  # the score of an image: the mean over its crops
            return self.forward(x.flatten(0, 1)).view(-1, k).mean(1)
        return self.head(self.features(x))


class MultiHeadIQAModel(BackboneMixin, MultiTaskModule):
    """Shared backbone, one head per task label, chosen by the label at test time.

    A new task's head starts as a copy of the initial head, so every task
    starts from the same point.
    """

    task_features = False  # True where the backbone's features depend on the task (TSN)

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.initial_head = copy.deepcopy(head)
        self.heads = nn.ModuleDict({"0": head})

    def adaptation(self, experience) -> None:
        # Not super().adaptation: that one assumes class labels.
        for t in experience.task_labels:
            if str(t) not in self.heads:
                device = next(self.backbone.parameters()).device
                self.heads[str(t)] = copy.deepcopy(self.initial_head).to(device)
        if self.training:
            self.known_train_tasks_labels |= set(experience.task_labels)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        if str(task_label) not in self.heads:
            raise UserError(f"no head for task label {task_label}; train on that task first")
        return self.heads[str(task_label)](self.features(x))

    def head_scores(self, x: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        """(B, T): the heads of `tasks` on each image, for task-agnostic scoring; the
        backbone runs once where its features do not depend on the task."""
        if k := self.crops_of(x):
            return self.head_scores(x.flatten(0, 1), tasks).view(-1, k, len(tasks)).mean(1)
        if self.task_features:  # one pass per task (PackNet's subnetworks, TSN's norms)
            return torch.stack([self.forward_single_task(x, t) for t in tasks], dim=1)
        features = self.features(x)
        return torch.stack([self.heads[str(t)](features) for t in tasks], dim=1)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
        if k := self.crops_of(x):  # the score of an image: the mean over its crops
            labels = task_labels if isinstance(task_labels, int) else \
                task_labels.repeat_interleave(k)
            return self.forward(x.flatten(0, 1), labels).view(-1, k).mean(1)
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        out = torch.empty(x.shape[0], device=x.device)
        for task in torch.unique(task_labels):
            mask = task_labels == task
            out[mask] = self.forward_single_task(x[mask], int(task.item()))
        return out


def multi_head(model: nn.Module) -> MultiHeadIQAModel:
    """The model with one head per task (new heads copies of its initial head): what the
    multi-head strategies train, whatever model.heads says."""
    if isinstance(model, MultiHeadIQAModel):
        return model
    out = MultiHeadIQAModel(model.backbone, model.head)
    out.mean, out.std, out.backbone_info = model.mean, model.std, model.backbone_info
    return out


def build_model(backbone: str = "mobilenet_v2", pretrained: bool = False,
                head: str = "similarity", embed_dim: int = 128,
                heads: str = "shared", freeze_backbone: bool = False,
                weights: str | None = None, weights_tag: str | None = None) -> nn.Module:
    """A quality model by name; `heads="per_task"` gives the task-aware variant."""
    if heads not in ("shared", "per_task"):
        raise UserError(f"unknown model.heads '{heads}'; choose 'shared' or 'per_task'")
    bb = build_backbone(backbone, pretrained, weights, weights_tag)
    first = make_head(head, bb.features, embed_dim)
    model = IQAModel(bb.net, first) if heads == "shared" else MultiHeadIQAModel(bb.net, first)
    model.mean, model.std = bb.mean, bb.std
    model.backbone_info = {"name": bb.name, "source": bb.source, "features": bb.features,
                           "mean": list(bb.mean), "std": list(bb.std),
                           "fixed_input_size": bb.fixed_size, **bb.info}
    if freeze_backbone:
        model.freeze_backbone()
    return model
