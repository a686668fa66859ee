"""Backbones by name: any torchvision classification model, or any timm model as
`timm/<name>`, with only its final classification layer removed.

The embedding width is read from the model itself (the removed `Linear`'s
`in_features`; timm's `num_features`), and the input normalisation from its
pretrained configuration (timm's mean / std: CLIP-style models differ from
ImageNet's). Offline first: weights come from the torch hub cache (torchvision),
the Hugging Face cache (timm) or a file named in the config (`model.weights`);
a missing file is an error naming the file and folder, never a download.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from torch import nn

from benchmarks.errors import UserError

from .backbone_base import Backbone, load_weights, weights_record

# The suite's first four names keep the weights and the cut they always had (demo and
# tables unchanged): torchvision's IMAGENET1K_V1, `fc` / `classifier` replaced whole.
LEGACY = {"resnet18": "fc", "mobilenet_v3_small": "classifier",
          "efficientnet_b0": "classifier", "mobilenet_v2": "classifier"}
LIST_HINT = "`iqacl models --list [PATTERN]` lists the names that can be used"
# torchvision's models whose classifier is a convolution, not a Linear: refused by name,
# before any work, and left out of `iqacl models --list` (the slow tests check the set).
CONV_CLASSIFIER = frozenset({"squeezenet1_0", "squeezenet1_1"})
NO_LINEAR = ("backbone '{name}' has no final Linear classifier to remove (its "
             "classifier is a convolution); choose another model")


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_names() -> list[str]:
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def weights_enum(name: str, tag: str | None = None):
    """The torchvision weights a name uses: V1 for the first four, else DEFAULT or `tag`."""
    from torchvision import models as tvm

    enum = tvm.get_model_weights(name)
    if tag:
        try:
            return enum[tag]
        except KeyError:
            raise UserError(f"model.weights_tag '{tag}' is not one of {name}'s weights "
                            f"{[w.name for w in enum]}") from None
    return enum.IMAGENET1K_V1 if name in LEGACY else enum.DEFAULT


def weight_file(name: str, tag: str | None = None) -> Path:
    """Where torchvision looks for `name`'s weights."""
    return hub_checkpoint_dir() / os.path.basename(weights_enum(name, tag).url)


def check_name(name: str) -> None:
    """Unknown names fail here, before any data is read."""
    if name.startswith("timm/"):
        import timm

        from .timm_backbones import timm_arch

        if not timm.is_model(name[5:]):
            raise UserError(f"unknown timm model '{name[5:]}' (model.backbone={name})"
                            f"{_did_you_mean(name[5:], timm.list_models())}{LIST_HINT}")
        timm_arch(name)  # a tag in the name is one of the model's
    elif name not in torchvision_names():
        raise UserError(f"unknown backbone '{name}': not a torchvision classification model "
                        f"(or timm/<name> for timm's){_did_you_mean(name, torchvision_names())}"
                        f"{LIST_HINT}")
    elif name in CONV_CLASSIFIER:
        raise UserError(NO_LINEAR.format(name=name))


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        return "; "
    names_text = " or ".join(filter(None, [", ".join(close[:-1]), close[-1]]))
    return f"; did you mean {names_text}? "


def build_backbone(name: str, pretrained: bool = False, weights: str | None = None,
                   weights_tag: str | None = None) -> Backbone:
    """The feature extractor for `model.backbone`, weights loaded offline."""
    check_name(name)
    if weights_tag and not (pretrained or weights):
        raise UserError(f"model.weights_tag={weights_tag} picks pretrained weights, but "
                        "model.pretrained is false; set model.pretrained=true or drop the tag")
    if name.startswith("timm/"):
        from .timm_backbones import build_timm

        return build_timm(name, pretrained, weights, weights_tag)
    return build_torchvision(name, pretrained, weights, weights_tag)


def build_torchvision(name: str, pretrained: bool, weights: str | None,
                      weights_tag: str | None) -> Backbone:
    from torchvision import models as tvm

    enum = weights_enum(name, weights_tag)
    info = {"weights_tag": enum.name if pretrained and not weights else None}
    use = None
    if pretrained and not weights:
        path = weight_file(name, weights_tag)
        if not path.is_file():
            hint = " (`make weights` installs it)" if path == weight_file(name) and \
                name == "mobilenet_v2" else (
                f"; on a connected machine: python -c \"import torchvision; "
                f"torchvision.models.get_model('{name}', weights='{enum.name}')\"")
            raise UserError(
                f"backbone '{name}': weights {path.name} ({enum.name}) are not in the torch "
                f"hub cache; put the file at {path}{hint}, or set model.weights: FILE, or "
                "model.pretrained=false")
        use = enum
        info.update(weights_record(path))
    kwargs = {"aux_logits": False, "init_weights": False} if use is None and \
        name in ("googlenet", "inception_v3") else {}
    net = tvm.get_model(name, weights=use, **kwargs)
    if hasattr(net, "aux_logits"):  # GoogLeNet / Inception: plain outputs in training too
        net.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    classifier, features = _cut_classifier(net, name)
    if weights:
        load_weights(net, Path(weights), classifier, name)
        info.update(weights_record(Path(weights).resolve()))
    transforms = enum.transforms()
    fixed = getattr(net, "image_size", None) if isinstance(net, tvm.VisionTransformer) else None
    return Backbone(net, features, name, "torchvision", tuple(transforms.mean),
                    tuple(transforms.std), fixed, classifier, info)


def _cut_classifier(net: nn.Module, name: str) -> tuple[str, int]:
    """Replace the final classification layer by Identity; its name and input width."""
    if name in LEGACY:  # the cut these four always had (the whole classifier block)
        attr = LEGACY[name]
        block = getattr(net, attr)
        last = [m for m in block.modules() if isinstance(m, nn.Linear)] if \
            isinstance(block, nn.Sequential) else [block]
        setattr(net, attr, nn.Identity())
        return attr, last[0].in_features
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(NO_LINEAR.format(name=name))
    path, layer = linears[-1]
    parent_name, _, attr = path.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, nn.Identity())
    return path, layer.in_features


