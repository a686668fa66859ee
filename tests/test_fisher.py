"""EWC's per-sample importance: the empirical Fisher, equal to a one-sample-at-a-time loop."""

from __future__ import annotations

import numpy as np
import torch
from test_strategies import run_tiny

from models import build_model
from strategies.fisher import (
    _factorable_linears,
    _linear_fisher,
    per_sample_fisher,
    per_sample_fisher_loop,
)


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, dtype=torch.float64, task: int = 0):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g, dtype=dtype)
        self.y = (torch.rand(n, generator=g, dtype=dtype) * 2 - 1)
        self.y[3] = float("nan")  # an unreadable image: left out of both
        self.task = task

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i, self.task


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].data - b[k].data).abs().max().item() for k in a)


def test_vmap_fisher_equals_the_per_sample_loop():
    cpu = torch.device("cpu")
    model = build_model("mobilenet_v3_small", pretrained=False).double()
    data = Images(10, 48)
    fast = per_sample_fisher(model, data, cpu, batch_size=4)
    slow = per_sample_fisher_loop(model, data, cpu)
    assert _max_diff(fast, slow) < 1e-10  # float64: the same quantity, not an approximation
    assert all((v.data >= 0).all() for v in fast.values())
    assert max(v.data.max().item() for v in fast.values()) > 1e-6


def test_per_task_heads_and_a_frozen_backbone():
    cpu = torch.device("cpu")
    model = build_model("mobilenet_v3_small", pretrained=False, heads="per_task",
                        freeze_backbone=True).double()
    data = Images(6, 48)
    fast = per_sample_fisher(model, data, cpu, batch_size=4)
    slow = per_sample_fisher_loop(model, data, cpu)
    assert _max_diff(fast, slow) < 1e-10
    assert all(not v.data.any() for k, v in fast.items() if k.startswith("backbone"))
    assert any(v.data.any() for k, v in fast.items() if k.startswith("heads"))



class Mixed(torch.nn.Module):
    """Linear layers used once per sample (factorised), twice and on a sequence (vmap)."""

    def __init__(self):
        super().__init__()
        self.twice, self.seq, self.once = (torch.nn.Linear(4, 4), torch.nn.Linear(4, 3),
                                           torch.nn.Linear(3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.twice(torch.tanh(self.twice(x)))
        h = self.seq(h.unsqueeze(1).expand(-1, 2, -1) * torch.tensor([1.0, -0.5]).to(h)[:, None])
        return self.once(torch.tanh(h.mean(1)))


class Rows(Images):
    def __init__(self, n: int):
        super().__init__(n, 1)
        self.x = self.x.reshape(n, 3)[:, :1].repeat(1, 4) * torch.arange(1.0, 5.0).double()


def test_linear_layers_seen_once_per_sample_are_factorised_and_still_exact():
    torch.manual_seed(0)
    model, data, cpu = Mixed().double(), Rows(9), torch.device("cpu")
    x, y = data.x[:3], data.y[:3]
    done = _linear_fisher(model, _factorable_linears(model), x, y, 0)
    assert set(done) == {"once.weight", "once.bias"}  # the other two go through vmap
    fast = per_sample_fisher(model, data, cpu, batch_size=4)
    slow = per_sample_fisher_loop(model, data, cpu)
    assert _max_diff(fast, slow) < 1e-12
    assert all(v.data.abs().max() > 0 for v in fast.values())

def test_ewc_with_per_sample_importance_trains_through_the_stream(tiny_demo):
    bench, test, _ = run_tiny(tiny_demo, "strategy.name=ewc", "strategy.importance=per_sample")
    plugin = bench.parts.plugins[0]
    assert plugin.importance == "per_sample"
    imp = plugin.importances[0]
    assert max(v.data.abs().max().item() for v in imp.values()) > 0
    assert np.isfinite(test.matrix("srcc", "none")).all()
