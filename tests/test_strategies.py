"""Strategies: each trains through a tiny stream; penalties, PackNet, state, user files."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from avalanche.training.utils import ParamData

from experiments.cli import main
from experiments.config import load_config
from experiments.results import write_run
from experiments.run import prepare, train_and_evaluate
from strategies import STRATEGIES, make_strategy
from strategies.l2 import L2Plugin
from strategies.packnet import FREE, PackNetModel
from strategies.regularization import EWC, MAS

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def tiny_config(root: Path, *extra: str) -> dict:
    return load_config(DEMO, [
        f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
        "data.image_size=48", "train.epochs=2",
        "log.progress=false", "eval.validation=false", *extra])


def run_tiny(root: Path, *extra: str):
    bench = prepare(tiny_config(root, *extra))
    test, val = train_and_evaluate(bench)
    return bench, test, val


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_writes_complete_results(name, tiny_demo, tmp_path):
    bench, test, val = run_tiny(tiny_demo, f"strategy.name={name}")
    results = write_run(tmp_path, config=bench.config, stream=bench.stream, test=test, val=val,
                        protocol=bench.spec.protocol, uses_task_labels=bench.uses_task_labels,
                        train_loss=bench.trainer.losses.per_experience, wall_time_s=0.0,
                        device="cpu")
    assert json.loads((tmp_path / "results.json").read_text()) == results
    rows = 1 if bench.spec.protocol == "joint" else 2
    for m in ("srcc", "plcc", "krcc"):
        matrix = np.array(results["matrices"][m], dtype=float)
        assert matrix.shape == (rows, 2) and np.isfinite(matrix).all()
    spec = STRATEGIES[name]  # multi-head: eval.heads decides (oracle by default: yes)
    assert results["uses_task_labels"] is (spec.uses_task_labels or spec.multi_head)
    stages = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert stages == (["initial", "joint"] if rows == 1 else ["after_0", "after_1", "initial"])
    # The state contract: every plugin's state survives a weights-only round trip.
    for plugin in bench.parts.plugins:
        if hasattr(plugin, "state_dict"):
            buf = io.BytesIO()
            torch.save(plugin.state_dict(), buf)
            buf.seek(0)
            torch.load(buf, weights_only=True)
    buf = io.BytesIO()
    torch.save(bench.trainer.strategy.model.state_dict(), buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)


def test_joint_has_one_row_and_no_stream_metrics(tiny_demo, tmp_path):
    bench, test, val = run_tiny(tiny_demo, "strategy.name=joint")
    results = write_run(tmp_path, config=bench.config, stream=bench.stream, test=test, val=val,
                        protocol="joint", uses_task_labels=False, train_loss=[],
                        wall_time_s=0.0, device="cpu")
    assert results["protocol"] == "joint"
    s = results["summary"]["srcc"]
    assert s["acc"] == pytest.approx(np.mean(results["matrices"]["srcc"][0]))
    assert s["bwt"] is None and s["fwt"] is None and s["forgetting"] is None
    assert s["msi"] is None


def test_same_seed_same_matrices(tiny_demo):
    a = run_tiny(tiny_demo)[1]
    b = run_tiny(tiny_demo)[1]
    for stage in a.stages:
        for j in range(2):
            assert np.array_equal(a.stages[stage][j][2], b.stages[stage][j][2])


def fake_strategy(model, loss=0.0, exp=1):
    return SimpleNamespace(model=model, loss=torch.tensor(loss), device="cpu",
                           clock=SimpleNamespace(train_exp_counter=exp))


def test_l2_penalty_zero_first_then_grows_with_distance():
    model = torch.nn.Linear(3, 2)
    plugin = L2Plugin(l2_lambda=2.0)
    s = fake_strategy(model, 1.0)
    plugin.before_backward(s)
    assert s.loss.item() == 1.0  # first experience: nothing to hold on to
    plugin.after_training_exp(s)
    assert plugin.penalty(model).item() == 0.0
    n = sum(p.numel() for p in model.parameters())
    for d in (0.1, 0.2):
        with torch.no_grad():
            for p, a in zip(model.parameters(), plugin.anchors.values(), strict=True):
                p.copy_(a + d)
        assert plugin.penalty(model).item() == pytest.approx(0.5 * 2.0 * n * d * d, rel=1e-5)


def test_ewc_penalty_zero_first_then_grows_with_distance():
    model = torch.nn.Linear(3, 1)
    plugin = EWC(ewc_lambda=1.0)
    s = fake_strategy(model, 0.0, exp=0)
    plugin.before_backward(s)
    assert s.loss.item() == 0.0
    plugin.saved_params[0] = {n: ParamData(n, init_tensor=p.detach().clone())
                              for n, p in model.named_parameters()}
    plugin.importances[0] = {n: ParamData(n, init_tensor=torch.ones_like(p))
                             for n, p in model.named_parameters()}
    penalties = []
    for d in (0.0, 0.1, 0.2):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(plugin.saved_params[0][n].data + d)
        s = fake_strategy(model, 0.0, exp=1)
        plugin.before_backward(s)
        penalties.append(s.loss.item())
    assert penalties[0] == 0.0 < penalties[1] < penalties[2]
    assert penalties[2] == pytest.approx(4 * penalties[1], rel=1e-4)
    state = plugin.state_dict()
    other = EWC(ewc_lambda=1.0)
    other.load_state_dict(state)
    assert torch.equal(other.importances[0]["weight"].data, plugin.importances[0]["weight"].data)


def test_mas_penalty_applies_to_a_minibatch_whose_loss_is_zero():
    # All images of a minibatch unreadable: the loss is exactly 0. Avalanche's MAS stops the
    # run there ("Loss is not available"); the penalty must still be added.
    model = torch.nn.Linear(3, 1)
    plugin = MAS(lambda_reg=2.0)
    s = fake_strategy(model, 0.0, exp=0)
    plugin.before_backward(s)
    assert s.loss.item() == 0.0  # first experience: nothing to hold on to
    plugin.params = {n: ParamData(n, init_tensor=p.detach() - 0.1)
                     for n, p in model.named_parameters()}
    plugin.importance = {n: ParamData(n, init_tensor=torch.ones_like(p))
                         for n, p in model.named_parameters()}
    s = fake_strategy(model, 0.0, exp=1)
    plugin.before_backward(s)
    n = sum(p.numel() for p in model.parameters())
    assert s.loss.item() == pytest.approx(2.0 * n * 0.01, rel=1e-5)


def test_packnet_old_task_predictions_bit_identical_and_masks_disjoint(tiny_demo):
    bench, test, _ = run_tiny(tiny_demo, "strategy.name=packnet", "train.epochs=2",
                              "strategy.post_prune_epochs=1", "strategy.prune_proportion=0.5")
    model = bench.trainer.strategy.model
    assert isinstance(model, PackNetModel) and model.finished == [0, 1]
    # Task 0's predictions after training task 1 equal those right after task 0.
    assert np.array_equal(test.stages["after_0"][0][2], test.stages["after_1"][0][2])
    assert not np.array_equal(test.stages["after_0"][1][2], test.stages["after_1"][1][2])
    shares = model.used_fraction()
    assert shares[0] == pytest.approx(0.5, abs=0.01)   # kept half of all weights
    assert shares[1] == pytest.approx(0.25, abs=0.01)  # half of what was left
    assert shares[FREE] == pytest.approx(0.25, abs=0.01)
    params = dict(model.backbone.named_parameters())
    for name, owner in model.owner.items():
        assert (params[name][owner == FREE] == 0).all()  # released weights are zero
    # Each task keeps its own BatchNorm statistics.
    key = next(k for k in model.norms[0] if k.endswith("running_mean"))
    assert not torch.equal(model.norms[0][key], model.norms[1][key])


def test_per_task_heads_are_task_aware(tiny_demo):
    bench, test, _ = run_tiny(tiny_demo, "model.heads=per_task")
    assert bench.uses_task_labels
    assert sorted(bench.trainer.strategy.model.heads) == ["0", "1"]


def test_unknown_hyperparameter_lists_valid_ones():
    from benchmarks.errors import UserError

    with pytest.raises(UserError, match=r"no hyperparameter \['lambda'\]; valid: \['mem_size'\]"):
        make_strategy("replay", **{"lambda": 1})
    with pytest.raises(UserError, match="strategy.mem_size = 'big': 'replay' expects int"):
        make_strategy("replay", mem_size="big")
    assert make_strategy("ewc", ewc_lambda="1e4").plugins[0].ewc_lambda == 10000.0


def test_a_strategy_from_a_users_own_file(tiny_demo, tmp_path, capsys):
    plugin_file = tmp_path / "my_strategy.py"
    plugin_file.write_text(textwrap.dedent('''
        from avalanche.core import SupervisedPlugin
        from strategies import StrategyParts, register_strategy

        class CountSteps(SupervisedPlugin):
            """Counts optimiser steps (a stand-in for a real idea)."""
            def __init__(self, scale: float):
                super().__init__()
                self.scale, self.steps = scale, 0

            def after_update(self, strategy, **kwargs):
                self.steps += 1

            def state_dict(self):
                return {"steps": self.steps}

        @register_strategy("my_thing")
        def my_thing(scale: float = 1.0) -> StrategyParts:
            """My own strategy."""
            return StrategyParts([CountSteps(scale)])
    '''))
    out = tmp_path / "run"
    code = main(["run", str(DEMO), "--out", str(out), "--plugins", str(plugin_file),
                 f"stream.EVA.root={tiny_demo / 'EVA'}", f"stream.AVA.root={tiny_demo / 'AVA'}",
                 "data.image_size=48", "train.epochs=1",
                 "log.progress=false", "strategy.name=my_thing", "strategy.scale=0.5"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["strategy"] == "my_thing"
    assert results["config"]["strategy"] == {"name": "my_thing", "scale": 0.5}
    assert STRATEGIES["my_thing"].params == {"scale": (float, 1.0)}


def test_the_guides_example_strategy_works(tiny_demo, tmp_path):
    """docs/STRATEGIES.md's example, taken from the doc itself, loads and trains."""
    from strategies import load_strategy_file

    doc = (Path(__file__).parents[1] / "docs" / "STRATEGIES.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my_strategies.py"
    path.write_text(code)
    load_strategy_file(path)
    assert STRATEGIES["freeze_backbone"].params == {"freeze_after": (int, 1)}
    bench, _, _ = run_tiny(tiny_demo, "strategy.name=freeze_backbone", "train.epochs=1")
    (plugin,) = bench.parts.plugins
    assert plugin.trained == 2
    model = bench.trainer.strategy.model
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_si_learns_importances_on_the_cpu(tiny_demo):
    """Avalanche 0.6's SI kept views of the live weights on the CPU: importances stayed 0."""
    bench = prepare(tiny_config(tiny_demo, "strategy.name=si", "train.epochs=1"))
    bench.trainer.train(bench.stream.benchmark.train_stream[0])
    (plugin,) = bench.parts.plugins
    importance = torch.cat([v.data for v in plugin.ewc_data[1].values()])
    assert (importance > 0).float().mean() > 0.5


@pytest.mark.parametrize("name", ["replay", "cumulative"])
def test_rehearsal_state_restores_into_a_fresh_plugin(name, tiny_demo):
    """What a checkpoint needs: state after experience 0 rebuilds the memory elsewhere."""
    first = prepare(tiny_config(tiny_demo, f"strategy.name={name}", "train.epochs=1"))
    first.trainer.train(first.stream.benchmark.train_stream[0])
    (plugin,) = first.parts.plugins
    buf = io.BytesIO()
    torch.save(plugin.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    second = prepare(tiny_config(tiny_demo, f"strategy.name={name}", "train.epochs=1"))
    (fresh,) = second.parts.plugins
    fresh.load_state_dict(state)
    second.trainer.train(second.stream.benchmark.train_stream[1])
    n0, n1 = (len(e.split.train) for e in second.stream.experiences)
    if name == "replay":  # 200 places, 100 per experience once there are two
        assert torch.equal(fresh.storage_policy.rows[0], plugin.storage_policy.rows[0][:100])
        assert fresh.stored_images() == min(n0, 100) + min(n1, 100)
    else:
        assert fresh.stored_images() == n0 + n1


@pytest.mark.parametrize("frozen", [False, True])
def test_evaluation_restores_every_module_train_flag(tiny_demo, frozen):
    # The template restores the flags in one pass (Avalanche calls the recursive train()
    # on every module); a frozen backbone must stay in eval mode while the head trains.
    bench = prepare(tiny_config(tiny_demo, f"model.freeze_backbone={str(frozen).lower()}"))
    model = bench.trainer.strategy.model
    model.train()
    if not frozen:
        model.head.eval()  # a mixed state, to be kept exactly
    before = {name: m.training for name, m in model.named_modules()}
    assert any(before.values()) and not all(before.values())
    strategy = bench.trainer.strategy
    strategy.dataloader, strategy.adapted_dataset = ["train batches"], ["train data"]
    bench.trainer.evaluate(bench.stream.benchmark.test_stream)
    assert {name: m.training for name, m in model.named_modules()} == before
    # The rest of the training state comes back too (an evaluation inside training).
    assert strategy.dataloader == ["train batches"]
    assert strategy.adapted_dataset == ["train data"]


def test_model_adaptation_moves_the_model_only_when_a_tensor_is_elsewhere(tiny_demo,
                                                                         monkeypatch):
    bench = prepare(tiny_config(tiny_demo))
    strategy = bench.trainer.strategy
    model = strategy.model
    moves = []
    to = model.to
    monkeypatch.setattr(model, "to", lambda *a, **k: moves.append(a) or to(*a, **k))
    strategy.experience = bench.stream.benchmark.test_stream[0]
    strategy.model_adaptation()
    assert moves == []  # every tensor is on the CPU already
    model.backbone.register_buffer("elsewhere", torch.zeros(1, device="meta"))
    strategy.device = torch.device("meta")  # now every other tensor is elsewhere
    strategy.model_adaptation()
    assert moves == [(torch.device("meta"),)]
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}


def test_model_adaptation_still_adapts_dynamic_modules(tiny_demo):
    # The walk is skipped for a model without DynamicModules; per-task heads are one.
    bench = prepare(tiny_config(tiny_demo, "model.heads=per_task"))
    strategy = bench.trainer.strategy
    strategy.experience = bench.stream.benchmark.test_stream[1]
    strategy.model_adaptation()
    assert sorted(strategy.model.heads) == ["0", "1"]


@pytest.mark.parametrize("name", ["cumulative", "joint"])
def test_strategies_that_mix_experiences_need_a_minibatch_per_experience(name, tiny_demo,
                                                                         tmp_path):
    # Avalanche's task-balanced loader would fail with a bare AssertionError mid-run.
    from benchmarks.errors import UserError
    from experiments.run import run

    config = tiny_config(tiny_demo, f"strategy.name={name}", "train.batch_size=1")
    with pytest.raises(UserError, match=rf"train.batch_size = 1: strategy '{name}' trains on "
                                        r"the stream's 2 experiences .* train.batch_size=2"):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # stopped before anything was written
