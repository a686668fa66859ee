"""A strategy's bookkeeping (importance, targets, selection) leaves the trained model as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from experiments.config import load_config
from experiments.run import prepare, train_and_evaluate
from strategies import STRATEGIES, bookkeeping, make_strategy

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"
HOOKS = ("after_training_exp", "after_training")


def _naive_first(name: str) -> bool:
    """Strategies whose first experience trains as naive does: same protocol, same model."""
    spec = STRATEGIES[name]
    return (spec.protocol == "stream" and not spec.uses_task_labels
            and make_strategy(name).wrap_model is None)


NAIVE_FIRST = sorted(n for n in STRATEGIES if _naive_first(n))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict) -> list[str]:
    assert before.keys() == after.keys()
    return [k for k in before if not (torch.equal(before[k], after[k])
                                      if isinstance(before[k], torch.Tensor)
                                      else _same(before[k], after[k]))]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class _Watch:
    """Wraps each plugin's after-experience hooks; records what they changed in the model."""

    def __init__(self, plugins: list):
        self.changes: list[tuple[str, str, list[str]]] = []
        for plugin in plugins:
            for hook in HOOKS:
                if hasattr(plugin, hook):
                    setattr(plugin, hook, self._wrap(plugin, hook, getattr(plugin, hook)))

    def _wrap(self, plugin, hook, fn):
        def watched(strategy, **kwargs):
            before = _snapshot(strategy.model)
            out = fn(strategy, **kwargs)
            self.changes.append((type(plugin).__name__, hook,
                                 _changed(before, _snapshot(strategy.model))))
            return out
        return watched


@pytest.fixture(scope="module")
def runs(tiny_demo):
    """Every registered strategy through the tiny stream, hooks watched (one run each)."""
    out = {}
    for name in sorted(STRATEGIES):
        config = load_config(DEMO, [
            f"stream.EVA.root={tiny_demo / 'EVA'}", f"stream.AVA.root={tiny_demo / 'AVA'}",
            "data.image_size=48", "train.epochs=2",
            "log.progress=false", "eval.validation=false", f"strategy.name={name}"])
        bench = prepare(config)
        watch = _Watch(bench.parts.plugins)
        test, _ = train_and_evaluate(bench)
        out[name] = (bench, test, watch)
    return out


@pytest.mark.parametrize("name", [n for n in NAIVE_FIRST if n != "naive"])
def test_first_row_equals_naives_bit_for_bit(name, runs):
    assert "mas" in NAIVE_FIRST and "ewc" in NAIVE_FIRST  # the list is not empty by accident
    naive, other = runs["naive"][1], runs[name][1]
    for j in range(2):  # every prediction after the first experience, not only the SRCC
        for a, b in zip(naive.stages["after_0"][j], other.stages["after_0"][j], strict=True):
            assert np.array_equal(a, b), f"{name}: after_0 on experience {j} differs from naive"
    assert runs[name][0].trainer.losses.per_experience[0] == \
        runs["naive"][0].trainer.losses.per_experience[0]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_after_experience_hooks_leave_the_model_as_trained(name, runs):
    bench, _, watch = runs[name]
    for plugin_name, hook, changed in watch.changes:
        plugin = next(p for p in bench.parts.plugins if type(p).__name__ == plugin_name)
        if getattr(plugin, "changes_model", False):
            # PackNet declares its changes: per-task owners, frozen values and BatchNorm
            # state (extra state); its pruning ran before the last epoch, not here.
            assert set(changed) <= {"_extra_state"}, (plugin_name, hook, changed)
        else:
            assert changed == [], f"{plugin_name}.{hook} changed {changed}"
    if bench.parts.plugins:
        assert watch.changes, "no after-experience hook was watched"


def test_packnet_and_tsn_declare_their_changes():
    from strategies.packnet import PackNetPlugin
    from strategies.tsn import TSNPlugin

    assert PackNetPlugin.changes_model is True and TSNPlugin.changes_model is True
    declared = sorted(type(p).__name__ for n in STRATEGIES for p in make_strategy(n).plugins
                      if getattr(p, "changes_model", False))
    assert declared == ["PackNetPlugin", "TSNPlugin"]


def test_bookkeeping_restores_buffers_flags_and_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 1))
    model.train()
    model[3].eval()  # a mixed state, as a frozen part of a model would be
    model[0].weight.requires_grad_(False)
    x = torch.randn(5, 3, 6, 6)
    model(x).sum().backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    before = _snapshot(model)
    bn_mean = model[1].running_mean

    with bookkeeping(model, grad=True) as m:
        assert not any(mod.training for mod in m.modules())
        assert all(p.grad is None for p in m.parameters())  # the pass starts clean
        m.train()  # a pass that switches BatchNorm back to training mode ...
        m(torch.randn(5, 3, 6, 6) * 3).pow(2).sum().backward()
        m[1].running_mean = torch.zeros(4)  # ... or replaces a buffer outright
        m[0].weight.requires_grad_(True)
    assert _changed(before, _snapshot(model)) == []
    assert model[1].running_mean is bn_mean
    assert [mod.training for mod in model] == [True, True, True, False]
    assert not model[0].weight.requires_grad
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None) and (
            p.grad is None or torch.equal(p.grad, grads[n]))

    with bookkeeping(model):
        assert not torch.is_grad_enabled()  # no graph unless the pass asks for one
    assert torch.is_grad_enabled()


def test_mas_importance_is_taken_in_eval_mode(runs):
    # The pass did not move BatchNorm (the hook test), and it still sees real gradients.
    plugin = runs["mas"][0].parts.plugins[0]
    assert sum(float(v.data.abs().sum()) for v in plugin.importance.values()) > 0


def test_the_guides_bookkeeping_example_leaves_the_model_as_trained(tiny_demo, runs):
    """docs/STRATEGIES.md's `bookkeeping` example, taken from the doc, as a strategy."""
    from strategies import StrategyParts, register_strategy

    doc = (Path(__file__).parents[1] / "docs" / "STRATEGIES.md").read_text()
    code = doc.split("```python\n")[2].split("```", 1)[0]
    assert "bookkeeping(strategy.model, grad=True)" in code
    namespace: dict = {}
    exec(compile(code, "STRATEGIES.md", "exec"), namespace)
    register_strategy("guide_gradnorm")(
        lambda: StrategyParts([namespace["GradNormImportance"]()]))
    try:
        config = load_config(DEMO, [
            f"stream.EVA.root={tiny_demo / 'EVA'}", f"stream.AVA.root={tiny_demo / 'AVA'}",
            "data.image_size=48", "train.epochs=2",
            "log.progress=false", "eval.validation=false", "strategy.name=guide_gradnorm"])
        bench = prepare(config)
        watch = _Watch(bench.parts.plugins)
        test, _ = train_and_evaluate(bench)
    finally:
        del STRATEGIES["guide_gradnorm"]
    assert [c[2] for c in watch.changes if c[1] == "after_training_exp"] == [[], []]
    assert bench.parts.plugins[0].importance  # it measured something
    for j in range(2):  # the model evaluated after its pass is the one naive trained
        naive = runs["naive"][1].stages["after_0"][j][2]
        assert np.array_equal(test.stages["after_0"][j][2], naive)
