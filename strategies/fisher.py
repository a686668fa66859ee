"""EWC's importance as the empirical Fisher, from per-sample gradients.

Avalanche's EWC squares the gradient of each *minibatch's* mean loss, which
is not the Fisher information: cross-sample terms remain and the value
depends on the batch size. The empirical Fisher is the mean over samples of
the squared gradient of each sample's own regression term,
`F = 1/N sum_i (d (f(x_i) - y_i)^2 / d theta)^2`. `torch.func` computes all
per-sample gradients of a minibatch at once (`vmap` over `grad`); the model
is in eval mode (BatchNorm uses its running statistics), as in Avalanche's
pass. Unreadable samples (NaN target) are left out.

A linear layer applied once to each sample's (in,) vector needs no per-sample
weight gradients: sample i's is `d_i a_i^T` (output gradient times input), so
the sum of their squares is `(d^2)^T (a^2)`, one matrix product over the
minibatch. `vmap` would write out B copies of the weight instead, which is
most of the time for a linear-probe head. Those layers' `d` and `a` come from
one ordinary backward pass of the summed losses (in eval mode the samples do
not interact); every other parameter goes through `vmap`.
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


def _inputs(model: torch.nn.Module, x: torch.Tensor, task: int) -> tuple:
    """The forward's arguments: a multi-task model also takes the task label."""
    return (x, task) if isinstance(model, MultiTaskModule) else (x,)


def _call(model: torch.nn.Module, params: dict, buffers: dict, x: torch.Tensor,
          task: int) -> torch.Tensor:
    return functional_call(model, (params, buffers), _inputs(model, x, task)).reshape(-1)


class _LinearInputsAndGrads:
    """Hooks keeping each linear layer's input and output gradient of one batched pass."""

    def __init__(self, model: torch.nn.Module, names: set[str]):
        self.inputs: dict[str, list] = {}
        self.grads: dict[str, list] = {}
        self.handles = [m.register_forward_hook(self._hook(name))
                        for name, m in model.named_modules() if name in names]

    def _hook(self, name: str):
        def keep(module, args, out):
            self.inputs.setdefault(name, []).append(args[0].detach())
            if out.requires_grad:
                out.register_hook(lambda g: self.grads.setdefault(name, []).append(g))
        return keep

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _factorable_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in model.named_modules()
            if type(m) is torch.nn.Linear and m.weight.requires_grad
            and (m.bias is None or m.bias.requires_grad)}


def _linear_fisher(model: torch.nn.Module, linears: dict[str, torch.nn.Linear],
                   x: torch.Tensor, y: torch.Tensor, task: int) -> dict[str, torch.Tensor]:
    """Summed squared per-sample gradients of the linear layers that saw one (in,) row
    per sample in one forward pass; the rest are left to `vmap`."""
    hooks = _LinearInputsAndGrads(model, set(linears))
    try:
        with torch.enable_grad():  # the gradients themselves are not kept: the hooks are
            loss = ((model(*_inputs(model, x, task)).reshape(-1) - y) ** 2).sum()
            torch.autograd.grad(loss, [m.weight for m in linears.values()], allow_unused=True)
    finally:
        hooks.remove()
    out = {}
    for name, m in linears.items():
        a, d = hooks.inputs.get(name, []), hooks.grads.get(name, [])
        if len(a) != 1 or len(d) != 1 or a[0].dim() != 2 or len(a[0]) != len(y):
            continue  # used twice, on sequences or not at all: per-sample gradients by vmap
        a2, d2 = a[0].pow(2), d[0].pow(2)
        out[f"{name}.weight"] = d2.T @ a2
        if m.bias is not None:
            out[f"{name}.bias"] = d2.sum(0)
    return out


def per_sample_fisher(model: torch.nn.Module, dataset, device: torch.device,
                      batch_size: int = 32, num_workers: int = 0) -> dict[str, ParamData]:
    """The empirical Fisher from per-sample gradients: `vmap`, and for linear layers the
    product of squared inputs and squared output gradients."""
    model.eval()
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    linears = _factorable_linears(model)

    def sample_loss(p: dict, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        return (_call(model, {**params, **p}, buffers, x.unsqueeze(0), task)[0] - y) ** 2

    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for batch in _loader(dataset, batch_size, num_workers):
        x, y, task = batch[0].to(device), batch[1].to(device).float(), int(batch[-1][0])
        ok = ~torch.isnan(y)
        x, y = x[ok], y[ok]
        if not len(y):
            continue
        done = _linear_fisher(model, linears, x, y, task) if linears else {}
        rest = {k: p for k, p in params.items() if k not in done}
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0, None))(rest, x, y, task) \
            if rest else {}
        for k, g in grads.items():
            # In place where g owns its memory (an unused parameter's zeros are expanded).
            sums[k] += (g.square_() if g.is_contiguous() else g.square()).sum(0)
        for k, v in done.items():
            sums[k] += v
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
        ((model(*_inputs(model, x, task)).reshape(-1)[0] - y[0]) ** 2).backward()
        for k, p in params.items():
            if p.grad is not None:  # None: not on this task's path (another task's head)
                sums[k] += p.grad.pow(2)
        n += 1
    model.zero_grad()
    return _as_param_data(model, sums, n)
