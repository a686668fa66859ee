"""`iqacl models`: any backbone's size and inference time, measured here; `--list`."""

from __future__ import annotations

import csv
import fnmatch
import io
import time

import torch

from .backbones import CONV_CLASSIFIER, LEGACY, torchvision_names
from .iqa import build_model

# The README's comparison: a handful of common backbones, torchvision's and timm's.
COMMON = [*LEGACY, "resnet50", "convnext_tiny", "efficientnet_v2_s", "swin_t",
          "timm/resnet18", "timm/convnext_nano", "timm/vit_small_patch16_224"]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_per_image(model: torch.nn.Module, batch: int, image_size: int, repeats: int,
                   device: torch.device = torch.device("cpu")) -> float:
    """Median milliseconds per image over `repeats` forward passes (after one warm-up)."""
    x = torch.rand(batch, 3, image_size, image_size, device=device)
    model(x)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return sorted(times)[len(times) // 2]


def profile_backbones(names: list[str] | None = None, image_size: int = 224, repeats: int = 5,
                      device: str = "cpu") -> list[dict]:
    dev = torch.device(device)
    rows = []
    for name in names or list(LEGACY):
        model = build_model(name, pretrained=False).eval().to(dev)
        rows.append({
            "backbone": name,
            "features": model.backbone_info["features"],
            "params_m": count_parameters(model) / 1e6,
            "backbone_params_m": count_parameters(model.backbone) / 1e6,
            "ms_batch1": time_per_image(model, 1, image_size, repeats, dev),
            "ms_batch32": time_per_image(model, 32, image_size, max(2, repeats // 2), dev),
        })
    return rows


HEAD = ["backbone", "embedding width", "parameters (model)", "parameters (backbone)",
        "ms/image, batch 1", "ms/image, batch 32"]


def format_profile(rows: list[dict], fmt: str = "md", device: str = "cpu",
                   image_size: int = 224) -> str:
    cells = [[r["backbone"], str(r["features"]), f"{r['params_m']:.2f} M",
              f"{r['backbone_params_m']:.2f} M", f"{r['ms_batch1']:.1f}",
              f"{r['ms_batch32']:.1f}"] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([HEAD, *cells])
        return buf.getvalue()
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    where = f"CPU, {torch.get_num_threads()} threads" if device == "cpu" else device
    lines.append(f"\n{where}, fp32, {image_size} px, untrained weights; similarity head, "
                 "embed_dim 128. Measured by `iqacl models`.")
    return "\n".join(lines)


def list_names(pattern: str = "", tags: bool = False) -> list[str]:
    """Every name `model.backbone` takes (torchvision's, then timm's), filtered by a glob
    or substring; with `tags`, timm's pretrained weights by name (`timm/<arch>.<tag>`)."""
    from .timm_backbones import timm_names

    names = timm_names(tags=True) if tags else \
        [n for n in torchvision_names() if n not in CONV_CLASSIFIER] + timm_names()
    if not pattern:
        return names
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n, glob)
            or fnmatch.fnmatch(n.removeprefix("timm/"), glob)]
