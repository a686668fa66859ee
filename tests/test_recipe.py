"""The field's training recipe: fidelity loss, optimiser and schedule, warm-up, selection."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import DEMO, one_line_error, same_metrics

from experiments.config import load_config
from experiments.run import prepare, run, train_and_evaluate
from models.loss import FidelityLoss, fidelity_loss, make_loss, thurstone_target
from strategies import STRATEGIES


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def fidelity(p: float, g: float, eps: float = 1e-8) -> float:
    return 1 - math.sqrt(p * g + eps) - math.sqrt((1 - p) * (1 - g) + eps)


# ---------------------------------------------------------------- the loss

def test_fidelity_binary_equals_a_hand_computation():
    pred = torch.tensor([0.3, -0.1, 0.5])
    target = torch.tensor([0.2, 0.8, 0.2])  # images 0 and 2 tie: that pair is left out
    expected = (fidelity(phi(0.3 - -0.1), 0.0) + fidelity(phi(-0.1 - 0.5), 1.0)) / 2
    got = fidelity_loss(pred, target, target_kind="binary")
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_fidelity_continuous_equals_a_hand_computation():
    pred = torch.tensor([0.3, -0.1, 0.5])
    target = torch.tensor([0.2, 0.8, 0.2])
    std = torch.tensor([0.1, 0.3, 0.2])
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(
        fidelity(phi(pred[i].item() - pred[j].item()),
                 phi((target[i].item() - target[j].item())
                     / math.sqrt(std[i].item() ** 2 + std[j].item() ** 2)))
        for i, j in pairs) / 3
    got = fidelity_loss(pred, target, std=std, target_kind="continuous")
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_the_continuous_target_of_the_fields_example_pair():
    g = thurstone_target(torch.tensor(3.6397 - 2.8391), torch.tensor(1.5428 ** 2 + 0.7600 ** 2))
    assert round(g.item(), 4) == 0.6792


def test_pairs_never_cross_task_labels_and_unreadable_images_pair_with_nothing():
    pred = torch.tensor([0.9, -0.4, 0.1, 0.6, 0.2])
    target = torch.tensor([0.5, -0.5, 0.7, -0.2, float("nan")])
    tasks = torch.tensor([0, 0, 1, 1, 1])
    alone = [fidelity_loss(pred[[0, 1]], target[[0, 1]]),
             fidelity_loss(pred[[2, 3]], target[[2, 3]])]
    mixed = fidelity_loss(pred, target, tasks)
    assert mixed.item() == pytest.approx(sum(a.item() for a in alone) / 2, abs=1e-7)
    # Across tasks the pairs would differ: the test would notice them.
    assert fidelity_loss(pred[:4], target[:4]).item() != pytest.approx(mixed.item(), abs=1e-4)


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_gradients_are_finite_where_the_predicted_probability_is_0_or_1(kind):
    pred = torch.tensor([40.0, -40.0, 0.0], requires_grad=True)  # Phi(+-40) is 1 / 0
    target = torch.tensor([-0.5, 0.5, 0.1])  # each order the opposite of the prediction
    loss = fidelity_loss(pred, target, std=torch.tensor([0.1, 0.2, 0.0]), target_kind=kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_the_fidelity_loss_never_branches_on_a_value(kind):
    # Meta tensors have no data: an `if` on a value or a boolean mask would raise here,
    # as it would make the CPU wait for the GPU at every minibatch there.
    loss = FidelityLoss(kind)
    loss.set_std({0: torch.ones(256)})
    loss.std_table = loss.std_table.to("meta")
    meta = torch.empty(128, device="meta", requires_grad=True)
    ints = torch.zeros(128, dtype=torch.long, device="meta")
    loss(meta, torch.empty(128, device="meta"), ints, ints).backward()
    assert meta.grad.shape == (128,)


def test_the_continuous_loss_looks_stds_up_by_task_and_row():
    loss = FidelityLoss("continuous")
    loss.set_std({0: torch.tensor([0.1, 0.3]), 1: torch.tensor([0.2, 0.2, 0.4])})
    pred, target = torch.tensor([0.3, -0.1, 0.4, 0.0]), torch.tensor([0.2, 0.8, 0.1, 0.5])
    tasks, rows = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 0])
    std = torch.tensor([0.1, 0.3, 0.4, 0.2])
    assert loss(pred, target, tasks, rows).item() == pytest.approx(
        fidelity_loss(pred, target, tasks, std, "continuous").item(), abs=1e-7)
    assert isinstance(make_loss({"name": "mse_ranking"}), torch.nn.Module)


# ---------------------------------------------------------------- the config

def test_recipe_options_are_checked_before_any_work():
    config = load_config(DEMO, ["train.schedule=step", "train.optimizer=sgd"])
    assert config["train"]["schedule"] == {"name": "step", "step": 3, "gamma": 0.1}
    assert config["train"]["optimizer"]["name"] == "sgd"
    for bad, key in (("loss.name=hinge", "loss.name"), ("train.select=best", "train.select"),
                     ("train.schedule.name=poly", "train.schedule.name"),
                     ("train.warmup_epochs=5", "train.warmup_epochs"),
                     ("train.optimizer.name=lamb", "train.optimizer.name")):
        assert key in one_line_error(load_config, DEMO, [bad])


def test_the_optimizer_is_the_one_named_with_its_settings():
    from experiments.recipe import make_optimizer

    model = torch.nn.Linear(3, 1)
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("sgd", torch.optim.SGD)):
        train = load_config(DEMO, [f"train.optimizer.name={name}", "train.lr=0.01",
                                   "train.weight_decay=0.001", "train.optimizer.nesterov=true",
                                   "train.optimizer.momentum=0.8"])["train"]
        opt = make_optimizer(model, train)
        assert type(opt) is cls
        assert opt.defaults["lr"] == 0.01 and opt.defaults["weight_decay"] == 0.001
        if name == "sgd":
            assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] is True
    assert "nesterov" in one_line_error(load_config, DEMO, ["train.optimizer.name=sgd",
                                                           "train.optimizer.nesterov=true",
                                                           "train.optimizer.momentum=0"])


def tiny(root: Path, *extra: str) -> dict:
    return load_config(DEMO, [
        f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
        "data.image_size=48", "log.progress=false", "log.plots=false", *extra])


# ---------------------------------------------------------------- schedule and warm-up

@pytest.mark.parametrize("schedule,strategy", [("step", "naive"), ("cosine", "packnet")])
def test_the_lr_of_each_epoch_is_torchs_schedule_restarted_per_experience(
        schedule, strategy, tiny_demo, tmp_path):
    config = tiny(tiny_demo, "train.epochs=4", f"train.schedule.name={schedule}",
                  "train.schedule.step=2", "train.schedule.gamma=0.5", "train.lr=0.001",
                  f"strategy.name={strategy}")
    results = run(config, tmp_path / "run")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.001)
    sched = (torch.optim.lr_scheduler.StepLR(opt, 2, 0.5) if schedule == "step" else
             torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4))
    expected = []
    for _ in range(4):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_exp = results["training"]["per_experience"]
    assert [per_exp[n]["lr"] for n in ("EVA", "AVA")] == [expected, expected]


class WarmupSpy(SupervisedPlugin):
    """Backbone and head tensors when an experience starts and when its warm-up ends."""

    def __init__(self):
        super().__init__()
        self.start, self.end, self.flags = [], [], []

    @staticmethod
    def tensors(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def before_training_exp(self, strategy, **kwargs):
        self.start.append(self.tensors(strategy.model))

    def before_training_stage(self, strategy, **kwargs):
        self.end.append(self.tensors(strategy.model))
        self.flags.append([p.requires_grad for p in strategy.model.backbone.parameters()])


def test_the_warm_up_trains_only_the_head(tiny_demo):
    config = tiny(tiny_demo, "train.epochs=2", "train.warmup_epochs=1",
                  "train.warmup_batch_size=64", "eval.validation=false")
    bench = prepare(config)
    spy = WarmupSpy()
    bench.trainer.strategy.plugins.append(spy)
    train_and_evaluate(bench)
    assert len(spy.start) == len(spy.end) == 2
    model = bench.trainer.strategy.model
    buffers = {k for k, _ in model.backbone.named_buffers(prefix="backbone")}
    assert any("running_mean" in k for k in buffers)
    for start, end in zip(spy.start, spy.end, strict=True):
        backbone = [k for k in start if k.startswith("backbone.")]
        assert all(torch.equal(start[k], end[k]) for k in backbone)  # params and BN buffers
        head = [k for k in start if k.startswith("head.")]
        assert any(not torch.equal(start[k], end[k]) for k in head)  # the head trained
    assert all(spy.flags[0])  # the full stage trains the backbone again
    final = WarmupSpy.tensors(model)
    assert any(not torch.equal(spy.end[1][k], final[k]) for k in final
               if k.startswith("backbone."))


# ---------------------------------------------------------------- selection

def test_the_selected_epoch_is_the_best_validation_epoch_and_is_evaluated(tiny_demo, tmp_path):
    config = tiny(tiny_demo, "train.epochs=3", "train.select=best_val", "train.lr=0.003",
                  "loss.name=fidelity")
    results = run(config, tmp_path / "run")
    val = results["validation"]["matrices"]["srcc"]
    for j, name in enumerate(("EVA", "AVA")):
        sel = results["training"]["per_experience"][name]["selection"]
        assert sel["mode"] == "best_val" and len(sel["curve"]) == 3
        assert sel["val_srcc"] == max(sel["curve"])
        assert sel["curve"][sel["selected_epoch"] - 1] == sel["val_srcc"]
        # The matrix row evaluates the selected weights: the same validation SRCC.
        assert same_metrics(val[j][j], sel["val_srcc"], atol=1e-12)
    assert results["training"]["loss"] == {"name": "fidelity", "target": "binary",
                                           "eps": 1e-8}
    curve = [r for r in (tmp_path / "run/metrics.csv").read_text().splitlines()
             if r.startswith("Val_SRCC_Epoch/")]
    assert len(curve) == 6


def test_an_experience_without_validation_keeps_its_last_epoch(tiny_demo, tmp_path, caplog):
    config = tiny(tiny_demo, "train.epochs=1", "train.select=best_val", "data.val_fraction=0")
    results = run(config, tmp_path / "run")
    sel = results["training"]["per_experience"]["EVA"]["selection"]
    assert sel["mode"] == "last" and sel["fallback"] == "no validation split"
    assert "the last epoch's model is kept" in caplog.text


def test_ewc_importance_is_computed_on_the_selected_weights(tiny_demo, monkeypatch):
    import experiments.selection as selection

    # Each epoch scores lower than the one before: epoch 1 is selected, never the last.
    calls = itertools.count()
    monkeypatch.setattr(selection, "CORRELATIONS", {"srcc": lambda t, p: -float(next(calls))})
    config = tiny(tiny_demo, "train.epochs=3", "train.select=best_val",
                  "strategy.name=ewc", "eval.validation=false")
    bench = prepare(config)
    ewc = bench.parts.plugins[0]
    seen, epochs = [], []

    class EpochWeights(SupervisedPlugin):
        def after_training_epoch(self, strategy, **kwargs):
            epochs.append(WarmupSpy.tensors(strategy.model))

    compute = ewc.compute_importances

    def spy(model, *args, **kwargs):
        seen.append((torch.get_rng_state(), WarmupSpy.tensors(model), args, kwargs))
        return compute(model, *args, **kwargs)

    monkeypatch.setattr(ewc, "compute_importances", spy)
    bench.trainer.strategy.plugins.append(EpochWeights())
    train_and_evaluate(bench)
    record = bench.trainer.selection.records[0]
    assert record["selected_epoch"] == 1
    rng, weights, args, kwargs = seen[0]
    assert all(torch.equal(weights[k], epochs[0][k]) for k in weights)
    assert any(not torch.equal(weights[k], epochs[2][k]) for k in weights)
    # Recomputed from epoch 1's saved weights: bit-identical importances.
    model = copy.deepcopy(bench.trainer.strategy.model)
    model.load_state_dict(epochs[0])
    criterion, _, *rest = args  # Avalanche's pass zeroes the grads through the optimizer
    torch.set_rng_state(rng)
    again = compute(model, criterion, torch.optim.SGD(model.parameters(), lr=0.0), *rest,
                    **kwargs)
    importance = ewc.importances[0]
    assert importance.keys() == again.keys()
    assert all(torch.equal(importance[k].data, again[k].data) for k in again)


# ---------------------------------------------------------------- resume

RECIPE = ["train.epochs=3", "train.warmup_epochs=1", "train.warmup_batch_size=64",
          "train.select=best_val", "train.schedule.name=step", "train.schedule.step=2",
          "loss.name=fidelity", "train.fresh_optimizer=true"]


@pytest.mark.parametrize("kill", ["1:1", "1:5"])  # AVA's warm-up, then its full stage
def test_a_best_val_run_killed_in_either_stage_resumes_to_identical_numbers(
        kill, tiny_demo, tmp_path):
    args = [f"stream.EVA.root={tiny_demo / 'EVA'}", f"stream.AVA.root={tiny_demo / 'AVA'}",
            "data.image_size=48", "log.progress=false", "log.plots=false", *RECIPE]
    config = load_config(DEMO, args)
    reference = run(config, tmp_path / "reference")
    stages = reference["training"]["per_experience"]["AVA"]["selection"]["stages"]
    assert stages == ["warmup", "full", "full"]
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("iqacl")
    proc = subprocess.run([str(exe), "run", str(DEMO), "--out", str(out), *args],
                          env={**os.environ, "IQACL_KILL_AT": kill}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    resumed = run(config, out, resume=True)
    for m in ("srcc", "plcc", "krcc"):
        assert same_metrics(resumed["matrices"][m], reference["matrices"][m])
        assert same_metrics(resumed["validation"]["matrices"][m],
                            reference["validation"]["matrices"][m])
    assert resumed["training"] == reference["training"]
    assert json.loads((out / "results.json").read_text())["training"] == reference["training"]


# ---------------------------------------------------------------- every strategy

@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_trains_with_the_recipe(name, tiny_demo, tmp_path):
    extra = ["strategy.post_prune_epochs=1"] if name == "packnet" else []
    config = tiny(tiny_demo, *RECIPE, f"strategy.name={name}", *extra)
    results = run(config, tmp_path / "run")
    steps = ["joint"] if results["protocol"] == "joint" else ["EVA", "AVA"]
    for step in steps:
        entry = results["training"]["per_experience"][step]
        assert entry["selection"]["stages"] == ["warmup", "full", "full"]
        lr = config["train"]["lr"]
        assert entry["lr"] == pytest.approx([lr, lr, lr * 0.1], rel=1e-12)
        if entry["selection"]["mode"] == "best_val":
            assert entry["selection"]["val_srcc"] == max(
                v for v in entry["selection"]["curve"][entry["selection"]["eligible_from"] - 1:]
                if v is not None)


# ---------------------------------------------------------------- the continuous target

BIQA = Path(__file__).parents[1] / "experiments" / "configs" / "demo_biqa.yaml"
NAMES = ("LIVE", "CSIQ", "BID", "CLIVE", "KonIQ", "KADID")


def test_the_continuous_target_needs_stds_and_reads_them_on_the_targets_scale(tmp_path):
    from benchmarks.demo.biqa import FOLDERS, make_biqa_demo

    make_biqa_demo(tmp_path, scale=0.05, seed=0)
    roots = [f"stream.{n}.root={tmp_path / f}" for n, f in zip(NAMES, FOLDERS, strict=True)]
    args = [*roots, "loss.name=fidelity", "loss.target=continuous", "log.progress=false",
            "train.epochs=2"]
    message = one_line_error(prepare, load_config(BIQA, args))
    assert "BID" in message and "loss.target=binary" in message
    config = load_config(BIQA, args)
    config["stream"] = [e for e in config["stream"] if e["name"] != "BID"]
    bench = prepare(config)
    table = bench.trainer.strategy._criterion.std_table
    for exp in bench.stream.experiences:
        std = torch.tensor(exp.part("train")["std"].to_numpy(), dtype=torch.float32)
        lo, hi = exp.scale
        assert torch.isfinite(std).all(), exp.name
        assert torch.allclose(table[exp.task_label, : len(std)], std * 2 / (hi - lo))
    config["stream"] = config["stream"][:2]
    results = run(config, tmp_path / "run")
    assert results["training"]["loss"]["target"] == "continuous"
    assert all(math.isfinite(v) and v > -1 for v in results["train_loss"][0])
