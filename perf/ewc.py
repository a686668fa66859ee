"""EWC's per-sample importance: `torch.func.vmap` against one backward pass per sample."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .timing import Row, Turns, best, side_by_side, sync


def ewc_rows(n: int, size: int, rounds: int = 3) -> list[Row]:
    """Per-sample EWC importance on the CPU: a full model, and a head on cached features."""
    from benchmarks.features import FeatureRows
    from models import build_model
    from strategies.fisher import per_sample_fisher, per_sample_fisher_loop

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    images = FeatureRows(torch.randint(0, 256, (n, 3, size, size), generator=g,
                                       dtype=torch.uint8), torch.rand(n, generator=g) * 2 - 1)
    rows = []
    for label, model, data in (
        (f"full model (mobilenet_v2, {size} px)", build_model("mobilenet_v2"), images),
        ("linear probe (head on cached features)",
         build_model("mobilenet_v2", freeze_backbone=True),
         FeatureRows(torch.randn(n * 8, 1280, generator=g), torch.rand(n * 8, generator=g))),
    ):
        data = WithTask(data)
        turns, floor = fisher_times(model, data, cpu, rounds)
        # Equality of the two computations, in float64 where rounding cannot hide a mistake.
        m64, sub = copy.deepcopy(model).double(), WithTask(data.base, 4, torch.float64)
        a, b = per_sample_fisher(m64, sub, cpu, 4), per_sample_fisher_loop(m64, sub, cpu)
        diff = max((a[k].data - b[k].data).abs().max().item() for k in a)
        bound = float(np.median(turns.slow)) / floor
        rows.append(turns.row(
            f"EWC per-sample importance, {label}: vmap vs loop", len(data), "samples/s", 5.0,
            bound=bound,
            note=f"{len(data)} samples, batch 32, CPU, {rounds} rounds in turns; float64 max "
                 f"|Δ| {diff:.1e} (tolerance 1e-5)" + ("" if diff < 1e-5 else " FAILED") +
                 f"; one batched forward + backward alone: {bound:.2f}× the loop"))
    return rows


def fisher_times(model: torch.nn.Module, data, dev: torch.device,
                 rounds: int) -> tuple[Turns, float]:
    """Per-sample EWC importance by vmap and by the loop (timed in turns), and the seconds of
    one batched forward + backward pass: the least any per-sample method must run."""
    from strategies.fisher import per_sample_fisher, per_sample_fisher_loop

    turns = side_by_side(lambda: (per_sample_fisher(model, data, dev, 32), sync(dev)),
                         lambda: (per_sample_fisher_loop(model, data, dev), sync(dev)), rounds)
    return turns, best(lambda: _forward_backward(model, data, 32, dev), rounds)


def _forward_backward(model: torch.nn.Module, data, batch_size: int,
                      dev: torch.device = torch.device("cpu")) -> None:
    """The plain training step's gradient over the same samples: no per-sample anything."""
    model.eval()
    for x, y, _, _ in torch.utils.data.DataLoader(data, batch_size=batch_size):
        model.zero_grad()
        ((model(x.to(dev)).reshape(-1) - y.to(dev)) ** 2).sum().backward()
    model.zero_grad()
    sync(dev)


class WithTask(torch.utils.data.Dataset):
    """(x, y, row) samples with a task label, optionally fewer and in another dtype."""

    def __init__(self, base, limit: int | None = None, dtype=None):
        self.base, self.limit, self.dtype = base, limit, dtype

    def __len__(self) -> int:
        return min(len(self.base), self.limit or len(self.base))

    def __getitem__(self, i: int):
        x, y, row = self.base[i]
        if self.dtype is not None:
            x = (x.float() / 255 if x.dtype == torch.uint8 else x).to(self.dtype)
            y = y.to(self.dtype)
        return x, y, row, 0


