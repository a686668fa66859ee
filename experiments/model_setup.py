"""The model a config names, checked before any data is read: the backbone exists, its
weights are at hand, and it can take the configured input size."""

from __future__ import annotations

import torch

from benchmarks.errors import UserError, exception_line
from benchmarks.stream import entry_transform
from models import build_model


def model_from_config(config: dict) -> torch.nn.Module:
    m = config["model"]
    model = build_model(m["backbone"], m["pretrained"], m["head"], m["embed_dim"], m["heads"],
                        m["freeze_backbone"], m["weights"] or None, m["weights_tag"] or None)
    check_input_size(config, model)
    return model


def check_input_size(config: dict, model: torch.nn.Module) -> None:
    """A backbone that needs one input size gets it from the crops, never by resizing a
    quality image to fit; otherwise the error says what to set."""
    fixed = (model.backbone_info or {}).get("fixed_input_size")
    data, name = config["data"], config["model"]["backbone"]
    if not fixed:
        return _probe(model, name, data["image_size"])
    if data["image_size"] != fixed:
        raise UserError(f"backbone '{name}' takes {fixed} x {fixed} px images only; set "
                        f"data.image_size={fixed} (timm's ViTs, e.g. "
                        "timm/vit_small_patch16_224, take other sizes)")
    crops = [e["name"] for e in config["stream"]
             if entry_transform(e, data["transform"]) == "crop"]
    if crops and data["crop_eval"] == "whole":
        raise UserError(f"backbone '{name}' takes {fixed} px crops only, but {crops} are "
                        "evaluated on whole images; set data.crop_eval=five_crop")


def _probe(model: torch.nn.Module, name: str, size: int) -> None:
    """One image through the backbone, so a size it cannot take stops the run here."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.backbone(model.as_input(torch.zeros(1, 3, size, size)))
    except Exception as exc:  # torch and timm say it in many ways: pass their words on
        raise UserError(f"backbone '{name}' cannot take {size} x {size} px images "
                        f"({exception_line(exc)}); set another data.image_size") from None
    finally:
        model.train(was_training)
