"""One helper for a strategy's own passes over the model (importance, targets, selection).

A pass that runs the trained model after (or beside) training must not change
it: in training mode BatchNorm updates its running statistics on every
forward, so an importance pass in training mode shifts the model that is then
evaluated. `bookkeeping(model)` runs a pass in eval mode and leaves the model
as it found it:

    with bookkeeping(strategy.model, grad=True) as model:   # grad: the pass backpropagates
        for x, *_ in loader:
            model(x).pow(2).sum().backward()
            ...                                             # read p.grad here

- every module in eval mode; on exit each module's train flag as it was;
- every buffer's value and tensor restored on exit (a pass that switches a
  module back to training mode cannot move its statistics);
- the parameters' `.grad` set aside on entry and put back on exit, and
  `requires_grad` flags restored, so the pass's gradients never reach the
  next optimiser step;
- autograd off unless `grad=True`.

It does not copy parameters: a pass that means to change weights (PackNet's
pruning) changes them, and says so (`changes_model = True` on its plugin).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def bookkeeping(model: nn.Module, *, grad: bool = False) -> Iterator[nn.Module]:
    """Run a strategy's pass over `model` in eval mode; flags, buffers and grads restored."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    buffers = [(m, name, b, b.detach().clone()) for m in modules
               for name, b in m._buffers.items() if b is not None]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.grad = None
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield model
    finally:
        with torch.no_grad():
            for m, name, tensor, saved in buffers:
                m._buffers[name] = tensor
                tensor.copy_(saved)
        for m, mode in zip(modules, modes, strict=True):
            m.__dict__["training"] = mode  # a plain attribute: no recursive train() needed
        for p, g, flag in zip(params, grads, flags, strict=True):
            p.requires_grad_(flag)
            p.grad = g
