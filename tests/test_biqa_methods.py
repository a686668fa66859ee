"""The field's continual-BIQA methods: heads scored without task labels (routing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import DEMO, one_line_error, same_metrics

from experiments.config import load_config
from experiments.results import routing_accuracy
from experiments.run import prepare, run, train_and_evaluate
from models.routing import combine, fit_prototypes, routing_weights

FAST_ROUTING = ["eval.routing.k=8", "eval.routing.n_init=2"]


def tiny(root: Path, *extra: str) -> list[str]:
    return [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=48", "train.epochs=1", "log.progress=false", "log.plots=false",
            "model.heads=per_task", *FAST_ROUTING, *extra]


# ---------------------------------------------------------------- routing, by itself

def test_routing_on_separated_clusters_is_always_right_and_weights_sum_to_one():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 16) * 4.0
    train = [c + 0.05 * torch.randn(60, 16, generator=gen) for c in centres]
    test = [c + 0.05 * torch.randn(20, 16, generator=gen) for c in centres]
    prototypes = [fit_prototypes(x, k=4, n_init=2) for x in train]
    assert [p.shape for p in prototypes] == [(4, 16)] * 3
    cells = {}
    for s, x in enumerate(test):
        w = routing_weights(x, prototypes, tau=32.0)
        assert torch.allclose(w.sum(1), torch.ones(len(x)), atol=1e-6)
        cells[s] = (None, None, None, w.double().numpy())
    assert routing_accuracy(cells, 3) == [1.0, 1.0, 1.0]


def test_k_is_capped_by_the_images_and_the_blend_is_explicit():
    assert fit_prototypes(torch.randn(5, 4), k=128, n_init=1).shape == (5, 4)
    scores, w = torch.tensor([[0.2, 0.6]]), torch.tensor([[0.25, 0.75]])
    assert combine(scores, w).item() == pytest.approx(0.5)
    assert combine(scores, w, 0.5).item() == pytest.approx(0.5 * 0.6 + 0.5 * 0.5)


# ---------------------------------------------------------------- eval.heads in a run

def test_with_one_experience_every_head_usage_gives_the_same_predictions(tiny_demo, tmp_path):
    preds = {}
    for heads in ("oracle", "newest", "weighted"):
        config = load_config(DEMO, tiny(tiny_demo, f"eval.heads={heads}"))
        config["stream"] = config["stream"][:1]
        results = run(config, tmp_path / heads)
        assert results["uses_task_labels"] is (heads == "oracle")
        preds[heads] = pd.read_csv(tmp_path / heads / "predictions/after_0/EVA.csv")
    assert preds["oracle"]["prediction"].nunique() > 10  # a trained, pretrained model
    for heads in ("newest", "weighted"):
        assert preds[heads]["prediction"].to_numpy().tobytes() == \
            preds["oracle"]["prediction"].to_numpy().tobytes(), heads
    assert (preds["weighted"]["weight_EVA"] == 1.0).all()


def test_a_weighted_run_saves_weights_the_routing_matrix_re_derives_from(tiny_demo, tmp_path):
    out = tmp_path / "run"
    config = load_config(DEMO, tiny(tiny_demo, "eval.heads=weighted", "log.plots=true"))
    results = run(config, out)
    routing = results["routing"]
    assert routing["heads"] == "weighted" and routing["task_aware"] is False
    assert results["uses_task_labels"] is False
    assert set(routing["matrices"]) == {"after_0", "after_1"}
    names = results["experiences"]
    for stage, matrix in routing["matrices"].items():
        seen = int(stage.split("_")[1]) + 1
        for s, name in enumerate(names):
            frame = pd.read_csv(out / "predictions" / stage / f"{name}.csv")
            weights = frame[[f"weight_{n}" for n in names[:seen]]].to_numpy()
            assert np.allclose(weights.sum(1), 1.0, atol=1e-6)
            derived = [*weights.mean(0), *[None] * (len(names) - seen)]
            assert same_metrics(matrix[s], [None if v is None else float(v) for v in derived],
                                atol=1e-9)
            if s < seen:
                own = float(np.mean(weights.argmax(1) == s))
                assert routing["accuracy"][stage][s] == pytest.approx(own)
    assert (out / "routing_matrix.png").stat().st_size > 10_000
    # iqacl verify re-derives it all, and notices a weight that does not match.
    from experiments.verify import verify_run

    assert verify_run(out) == []
    csv = out / "predictions/after_1/AVA.csv"
    frame = pd.read_csv(csv)
    frame.loc[0, "weight_EVA"], frame.loc[0, "weight_AVA"] = 0.0, 1.0
    frame.loc[1, "weight_EVA"], frame.loc[1, "weight_AVA"] = 1.0, 0.0
    frame.loc[2, "prediction"] = frame["prediction"].max() + 1
    frame.to_csv(csv, index=False)
    problems = verify_run(out)
    assert any("srcc row after_1" in p for p in problems), problems
    assert any("routing matrix after_1" in p or "routing accuracy after_1" in p
               for p in problems), problems


def test_eval_heads_needs_one_head_per_task_and_a_stream(tiny_demo):
    shared = load_config(DEMO, tiny(tiny_demo, "eval.heads=weighted", "model.heads=shared"))
    assert "model.heads=per_task" in one_line_error(prepare, shared)
    joint = load_config(DEMO, tiny(tiny_demo, "eval.heads=newest", "strategy.name=joint"))
    assert "eval.heads=oracle" in one_line_error(prepare, joint)
    assert "eval.heads" in one_line_error(load_config, DEMO, ["eval.heads=argmax"])


def test_a_smaller_routing_network_and_input_route_a_run(tiny_demo, tmp_path):
    """eval.routing.network / image_size: the cheaper routing the perf row measures."""
    from models import build_model
    from strategies.routing import HeadRouting

    model = build_model("mobilenet_v2", heads="per_task")
    router = HeadRouting(network="mobilenet_v3_small", image_size=32)
    router.see_initial_model(model)
    x = torch.randint(0, 256, (4, 3, 48, 64), dtype=torch.uint8)

    class Batch:  # what _embed reads of a strategy
        device = torch.device("cpu")
    small = router._embed(Batch(), x)
    assert small.shape == (4, 576)  # MobileNetV3-Small's pooled features, not MobileNetV2's
    seen = torch.nn.functional.interpolate(x.float() / 255, size=(32, 32), mode="bilinear",
                                           antialias=True)
    expected = router.net.backbone(router.net.as_input(seen))
    assert torch.equal(small, torch.nn.functional.normalize(expected))
    router.image_size = None
    assert not torch.allclose(router._embed(Batch(), x), small, atol=1e-3)

    args = tiny(tiny_demo, "eval.heads=weighted", "model.pretrained=false",
                "eval.routing.network=mobilenet_v3_small", "eval.routing.image_size=32")
    results = run(load_config(DEMO, args), tmp_path / "run")
    assert results["routing"]["network"] == "mobilenet_v3_small"
    assert results["routing"]["image_size"] == 32
    from experiments.verify import verify_run

    assert verify_run(tmp_path / "run") == []
    bad = load_config(DEMO, tiny(tiny_demo, "eval.heads=weighted", "model.pretrained=false",
                                 "eval.routing.network=no_such_net"))
    assert one_line_error(run, bad, tmp_path / "bad").startswith("eval.routing.network:")
    drifting = ["eval.routing.features=current", "eval.routing.network=mobilenet_v3_small"]
    assert "features=initial" in one_line_error(load_config, DEMO, drifting)


RESUMED = {"naive": [], "lwf_replay": ["strategy.mem_size=40"],
           "tsn": ["eval.routing.levels=[features.13, features.18]"]}


@pytest.mark.parametrize("strategy", list(RESUMED))
def test_a_killed_weighted_run_resumes_to_identical_matrices_and_routing(
        strategy, tiny_demo, tmp_path):
    args = tiny(tiny_demo, "eval.heads=weighted", "train.epochs=2", f"strategy.name={strategy}",
                "loss.name=fidelity", *RESUMED[strategy])
    config = load_config(DEMO, args)
    reference = run(config, tmp_path / "reference")
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("iqacl")
    proc = subprocess.run([str(exe), "run", str(DEMO), "--out", str(out), *args],
                          env={**os.environ, "IQACL_KILL_AT": "1:2"}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    resumed = run(config, out, resume=True)
    for m in ("srcc", "plcc"):
        assert same_metrics(resumed["matrices"][m], reference["matrices"][m])
    assert resumed["routing"] == reference["routing"]
    assert resumed["train_loss"] == reference["train_loss"]
    assert json.loads((out / "results.json").read_text())["routing"]["prototypes"] == \
        {"0": 8, "1": 8}


# ---------------------------------------------------------------- single-dataset references

class StartSpy(SupervisedPlugin):
    """The model's tensors and the optimiser's state as each experience starts."""

    def __init__(self):
        super().__init__()
        self.starts, self.optimizer_states = [], []

    def before_training_exp(self, strategy, **kwargs):
        self.starts.append({k: v.clone() for k, v in strategy.model.state_dict().items()})
        self.optimizer_states.append(len(strategy.optimizer.state))


def test_single_trains_each_experience_from_the_initial_model(tiny_demo, tmp_path):
    config = load_config(DEMO, tiny(tiny_demo, "strategy.name=single", "model.heads=shared"))
    bench = prepare(config)
    initial = {k: v.clone() for k, v in bench.trainer.strategy.model.state_dict().items()}
    spy = StartSpy()
    bench.trainer.strategy.plugins.append(spy)  # after the strategy's own plugin
    train_and_evaluate(bench)
    assert len(spy.starts) == 2 and spy.optimizer_states == [0, 0]
    for start in spy.starts:
        assert all(torch.equal(start[k], initial[k]) for k in initial)
    trained = bench.trainer.strategy.model.state_dict()
    assert not all(torch.equal(trained[k], initial[k]) for k in initial)

    results = run(config, tmp_path / "single")
    assert results["protocol"] == "single" and results["uses_task_labels"] is True
    srcc = results["matrices"]["srcc"]
    assert results["summary"]["srcc"]["acc"] == pytest.approx((srcc[0][0] + srcc[1][1]) / 2)
    assert results["summary"]["srcc"]["bwt"] is None


# ---------------------------------------------------------------- LwF over heads, replay

def test_lwf_over_heads_with_lambda_0_is_multi_head_naive_bit_for_bit(tiny_demo, tmp_path):
    out = {}
    for name, extra in (("naive", []), ("lwf_heads", ["strategy.lam=0"])):
        config = load_config(DEMO, tiny(tiny_demo, f"strategy.name={name}", *extra,
                                        "loss.name=fidelity", "train.epochs=2"))
        run(config, tmp_path / name)
        out[name] = torch.load(tmp_path / name / "models/after_1.pt", weights_only=True)
    assert all(torch.equal(out["naive"][k], out["lwf_heads"][k]) for k in out["naive"])
    config = load_config(DEMO, tiny(tiny_demo, "strategy.name=lwf_heads", "loss.name=fidelity",
                                    "train.epochs=2"))
    run(config, tmp_path / "lam10")
    distilled = torch.load(tmp_path / "lam10/models/after_1.pt", weights_only=True)
    assert not torch.equal(distilled["heads.1.positive"], out["naive"]["heads.1.positive"])
    # Naive never trains the old head again; distillation trains it towards its old scores.
    first = torch.load(tmp_path / "lam10/models/after_0.pt", weights_only=True)
    assert torch.equal(out["naive"]["heads.0.positive"], first["heads.0.positive"])
    assert not torch.equal(distilled["heads.0.positive"], first["heads.0.positive"])


class ReplaySpy(SupervisedPlugin):
    """The buffer's rows after each experience; the loss's task labels in each minibatch."""

    def __init__(self, replay):
        super().__init__()
        self.replay, self.rows, self.checked = replay, [], 0

    def before_backward(self, strategy, **kwargs):
        tasks = strategy.mb_task_id
        if strategy.clock.train_exp_counter == 1 and len(set(tasks.tolist())) == 2:
            # The criterion paired with the true labels (lwf_replay scores every item by
            # the newest head, then gives the labels back): no pair across datasets.
            loss = strategy._criterion(strategy.mb_output, strategy.mb_y, tasks,
                                       strategy.mbatch[2])
            assert torch.equal(loss.reshape(1), strategy.loss.reshape(1))
            mixed = strategy._criterion(strategy.mb_output, strategy.mb_y, None, None)
            assert not torch.equal(mixed.reshape(1), loss.reshape(1))
            self.checked += 1

    def before_training_exp(self, strategy, **kwargs):  # the memory the last one left
        self.rows.append({g: r.clone() for g, r in self.replay.storage_policy.rows.items()})


@pytest.mark.parametrize("name", ["lwf_replay", "replay_heads"])
def test_replay_memory_is_equal_per_task_refreshed_and_never_pairs_across(
        name, tiny_demo, tmp_path):
    config = load_config(DEMO, tiny(tiny_demo, f"strategy.name={name}", "strategy.mem_size=40",
                                    "loss.name=fidelity", "train.epochs=2"))
    bench = prepare(config)
    replay = bench.parts.plugins[0]
    spy = ReplaySpy(replay)
    bench.trainer.strategy.plugins.insert(0, spy)  # before the distillation adds its term
    train_and_evaluate(bench)
    spy.before_training_exp(None)
    first, second = spy.rows[1:]
    assert [len(r) for r in first.values()] == [40]
    assert [len(r) for r in second.values()] == [20, 20]
    assert torch.equal(second[0], first[0][:20])  # refreshed: a uniform subset of the old
    assert len(set(second[1].tolist())) == 20
    assert spy.checked > 0


def test_old_heads_are_distilled_only_on_their_replayed_items(tiny_demo, tmp_path):
    from strategies.lwf_replay import ReplayDistillation

    config = load_config(DEMO, tiny(tiny_demo, "strategy.name=lwf_replay", "loss.name=fidelity",
                                    "strategy.mem_size=40"))
    bench = prepare(config)
    plugin = next(p for p in bench.parts.plugins if isinstance(p, ReplayDistillation))
    seen = []
    original = plugin.distance

    def distance(strategy, new, old, keep=None):
        seen.append((strategy.mbatch[-1].clone(), keep.clone()))
        return original(strategy, new, old, keep)

    plugin.distance = distance
    train_and_evaluate(bench)
    assert seen and all(torch.equal(keep, tasks == 0) for tasks, keep in seen)


# ---------------------------------------------------------------- TSN

def test_tsn_never_changes_an_old_task_or_any_convolution(tiny_demo, tmp_path):
    out = tmp_path / "tsn"
    config = load_config(DEMO, tiny(tiny_demo, "strategy.name=tsn", "train.epochs=2"))
    initial = prepare(config).trainer.strategy.model.state_dict()
    results = run(config, out)
    a, b = (pd.read_csv(out / f"predictions/after_{i}/EVA.csv")["prediction"] for i in (0, 1))
    assert a.nunique() > 10 and a.to_numpy().tobytes() == b.to_numpy().tobytes()
    assert results["matrices"]["srcc"][0][0] == results["matrices"]["srcc"][1][0]
    final = torch.load(out / "models/after_1.pt", weights_only=True)
    norms = final["_extra_state"]["norms"]
    convs = [k for k in initial if k.startswith("backbone.") and k.endswith(".weight")
             and k.removeprefix("backbone.") not in norms[0]]
    assert len(convs) > 30
    assert all(torch.equal(final[k], initial[k]) for k in convs)
    # Each task's BatchNorm set moved away from the pretrained one, and differently.
    key = next(k for k in norms[0] if k.endswith("running_mean"))
    pretrained = initial[f"backbone.{key}"]
    assert not torch.equal(norms[0][key], pretrained)
    assert not torch.equal(norms[0][key], norms[1][key])
    assert results["model"]["tsn"]["per_task_norms"] < 0.05


def test_iqacl_strategies_lists_the_fields_methods_with_what_they_need_at_test(capsys):
    from experiments.cli import main

    assert main(["strategies"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    expected = {"lwf_heads": "lam: float = 10.0", "replay_heads": "mem_size: int = 1000",
                "lwf_replay": "mem_size: int = 1000, lam: float = 10.0", "tsn": "(none)",
                "single": "(none)"}
    for name, params in expected.items():
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        assert f"hyperparameters: {params}" in lines[i + 1], lines[i:i + 3]
        labels = lines[i].split("task_labels_at_test=")[1]
        assert labels == ("yes" if name == "single" else
                          "eval.heads (oracle: yes; newest, weighted: no)"), lines[i]
