"""EWC's importance as the empirical Fisher, from per-sample gradients.

Avalanche's EWC squares the gradient of each *minibatch's* mean loss, which
is not the Fisher information: cross-sample terms remain and the value
depends on the batch size. The empirical Fisher is the mean over samples of
the squared gradient of each sample's own regression term,
`F = 1/N sum_i (d (f(x_i) - y_i)^2 / d theta)^2`. `torch.func` computes all
per-sample gradients of a minibatch at once (`vmap` over `grad`); the model
is in eval mode (BatchNorm uses its running statistics), as in Avalanche's
pass. Unreadable samples (NaN target) are left out.
"""

from __future__ import annotations

import torch
from avalanche.models import MultiTaskModule
from avalanche.training.utils import ParamData
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader


def _loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      collate_fn=getattr(dataset, "collate_fn", None))


def _as_param_data(model: torch.nn.Module, sums: dict[str, torch.Tensor],
                   n: int) -> dict[str, ParamData]:
    """Every parameter gets an entry (zeros where frozen), as Avalanche's EWC expects."""
    out = {}
    for k, p in model.named_parameters():
        value = sums[k] / max(n, 1) if k in sums else torch.zeros_like(p)
        out[k] = ParamData(k, p.shape, device=p.device, init_tensor=value.detach())
    return out


def _call(model: torch.nn.Module, params: dict, buffers: dict, x: torch.Tensor,
          task: int) -> torch.Tensor:
    args = (x, task) if isinstance(model, MultiTaskModule) else (x,)
    return functional_call(model, (params, buffers), args).reshape(-1)


def per_sample_fisher(model: torch.nn.Module, dataset, device: torch.device,
                      batch_size: int = 32, num_workers: int = 0,
                      chunk_size: int | None = None) -> dict[str, ParamData]:
    """The empirical Fisher by `vmap` over per-sample gradients (`chunk_size` bounds memory)."""
    model.eval()
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def sample_loss(p: dict, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        return (_call(model, p, buffers, x.unsqueeze(0), task)[0] - y) ** 2

    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for batch in _loader(dataset, batch_size, num_workers):
        x, y, task = batch[0].to(device), batch[1].to(device).float(), int(batch[-1][0])
        ok = ~torch.isnan(y)
        x, y = x[ok], y[ok]
        if not len(y):
            continue
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0, None),
                     chunk_size=chunk_size)(params, x, y, task)
        for k, g in grads.items():
            sums[k] += g.pow(2).sum(0)
        n += len(y)
    return _as_param_data(model, sums, n)


def per_sample_fisher_loop(model: torch.nn.Module, dataset, device: torch.device,
                           num_workers: int = 0) -> dict[str, ParamData]:
    """The same quantity one sample at a time: the reference the `vmap` version must match."""
    model.eval()
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for batch in _loader(dataset, 1, num_workers):
        x, y, task = batch[0].to(device), batch[1].to(device).float(), int(batch[-1][0])
        if torch.isnan(y).any():
            continue
        model.zero_grad()
        args = (x, task) if isinstance(model, MultiTaskModule) else (x,)
        ((model(*args).reshape(-1)[0] - y[0]) ** 2).backward()
        for k, p in params.items():
            if p.grad is not None:  # None: not on this task's path (another task's head)
                sums[k] += p.grad.pow(2)
        n += 1
    model.zero_grad()
    return _as_param_data(model, sums, n)
