"""Backbones by name: a torchvision network with its classifier removed.

Offline first: ImageNet weights are used only from the torch hub cache. A
missing file is an error naming the file and where to put it, never a
download attempt that hangs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from benchmarks.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., nn.Module]
    weights: object  # torchvision WeightsEnum member
    features: int


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, build: Callable[..., nn.Module], weights: object,
                      features: int) -> None:
    BACKBONES[name] = BackboneSpec(build, weights, features)


register_backbone("resnet18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, 512)
register_backbone("mobilenet_v3_small", tvm.mobilenet_v3_small,
                  tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1, 576)
register_backbone("efficientnet_b0", tvm.efficientnet_b0,
                  tvm.EfficientNet_B0_Weights.IMAGENET1K_V1, 1280)
register_backbone("mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1, 1280)


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_file(name: str) -> Path:
    """Where torchvision looks for `name`'s ImageNet weights."""
    url = BACKBONES[name].weights.url
    return hub_checkpoint_dir() / os.path.basename(url)


def build_backbone(name: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """The feature extractor (images -> (B, features)) and its feature width."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    weights = None
    if pretrained:
        path = weight_file(name)
        if not path.is_file():
            hint = " (`make weights` installs it)" if name == "mobilenet_v2" else ""
            raise UserError(
                f"backbone '{name}': ImageNet weights {path.name} are not in the torch hub "
                f"cache; put the file at {path}{hint}, or set model.pretrained=false"
            )
        weights = spec.weights
    net = spec.build(weights=weights)
    if hasattr(net, "fc"):
        net.fc = nn.Identity()
    else:
        net.classifier = nn.Identity()
    return net, spec.features
