"""`iqacl models`: each backbone's size and CPU inference time, measured here."""

from __future__ import annotations

import time

import torch

from .backbones import BACKBONES
from .iqa import build_model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def time_per_image(model: torch.nn.Module, batch: int, image_size: int, repeats: int) -> float:
    """Median milliseconds per image over `repeats` forward passes (after one warm-up)."""
    x = torch.randn(batch, 3, image_size, image_size)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return sorted(times)[len(times) // 2]


def profile_backbones(image_size: int = 224, repeats: int = 5) -> list[dict]:
    rows = []
    for name in BACKBONES:
        model = build_model(name, pretrained=False).eval()
        rows.append({
            "backbone": name,
            "params_m": count_parameters(model) / 1e6,
            "backbone_params_m": count_parameters(model.backbone) / 1e6,
            "ms_batch1": time_per_image(model, 1, image_size, repeats),
            "ms_batch32": time_per_image(model, 32, image_size, max(2, repeats // 2)),
        })
    return rows


def format_profile(rows: list[dict]) -> str:
    threads = torch.get_num_threads()
    lines = [
        "| backbone | parameters (model) | parameters (backbone) | ms/image, batch 1 | "
        "ms/image, batch 32 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['params_m']:.2f} M | {r['backbone_params_m']:.2f} M"
                     f" | {r['ms_batch1']:.1f} | {r['ms_batch32']:.1f} |")
    lines.append(f"\nCPU, {threads} threads, fp32; similarity head, embed_dim 128.")
    return "\n".join(lines)
