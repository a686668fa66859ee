"""What every backbone source shares: the Backbone record and weight files.

Kept apart from `backbones.py` (torchvision, and the dispatch by name) so that
`timm_backbones.py` can use it without an import cycle.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchmarks.errors import UserError, exception_line

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Backbone:
    """A feature extractor (images -> (B, features)) and what a run records of it."""

    net: nn.Module
    features: int
    name: str
    source: str  # torchvision | timm
    mean: tuple[float, ...] = IMAGENET[0]
    std: tuple[float, ...] = IMAGENET[1]
    fixed_size: int | None = None  # input side the model needs (torchvision ViT)
    classifier: str = ""  # the removed layer's name (its keys are ignored in weight files)
    info: dict = field(default_factory=dict)  # weights tag, file, sha256


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_record(path: Path) -> dict:
    """What results.json says of a weight file: where it was and its sha256."""
    return {"weights_file": str(path), "sha256": sha256_of(path)}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise UserError(f"model.weights: {path} is a folder; give the weight file in it "
                        "(a .pth / .pt / .bin state dict or a .safetensors file)")
    if not path.is_file():
        raise UserError(f"model.weights: {path} not found; give the weight file's path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "add_safe_globals" not in str(exc):  # not a pickle of objects: not weights at all
            raise UserError(f"model.weights: {path} is not a PyTorch or safetensors weight "
                            "file (torch.load cannot read it)") from None
        # weights_only met pickled objects, not only tensors
        raise UserError(f"model.weights: {path} holds pickled objects (a whole saved model or "
                        "training checkpoint?), which are not loaded, as they could run code; "
                        "save the model's state_dict() with torch.save, or a .safetensors "
                        "file") from None
    except Exception as exc:  # not a checkpoint at all
        raise UserError(f"model.weights: {path} is not a PyTorch or safetensors weight file "
                        f"({exception_line(exc)})") from None
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"model.weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(net: nn.Module, path: Path, classifier: str, name: str) -> None:
    """A state dict into the cut network: strictly, the classifier's keys ignored."""
    prefixes = tuple(f"{c}." for c in classifier.split(",") if c)
    state = {k: v for k, v in read_state_dict(path).items()
             if not (prefixes and k.startswith(prefixes))}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise UserError(f"model.weights: {path} does not fit backbone '{name}' "
                        f"({str(exc).splitlines()[-1].strip()[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        missing, extra = result.missing_keys[:3], result.unexpected_keys[:3]
        raise UserError(f"model.weights: {path} does not fit backbone '{name}' "
                        f"({len(result.missing_keys)} missing keys {missing}, "
                        f"{len(result.unexpected_keys)} unexpected {extra}); give the weights "
                        "of this architecture")
