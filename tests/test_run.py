"""End to end: a tiny EVA -> AVA run, its files, its matrices, and the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.metrics import srcc
from experiments.cli import main
from experiments.config import load_config

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def tiny_overrides(root: Path) -> list[str]:
    return [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=64", "train.epochs=3", "log.progress=false"]


@pytest.fixture(scope="module")
def finished_run(tiny_demo, tmp_path_factory):
    from experiments.run import run

    out = tmp_path_factory.mktemp("run") / "r"
    config = load_config(DEMO, tiny_overrides(tiny_demo))
    return out, run(config, out)


def test_results_json_has_matrices_and_summaries(finished_run):
    out, results = finished_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert results["experiences"] == ["EVA", "AVA"]
    assert results["protocol"] == "stream" and results["uses_task_labels"] is False
    for m in ("srcc", "plcc", "krcc"):
        assert len(results["matrices"][m]) == 2 and all(len(r) == 2 for r in
                                                        results["matrices"][m])
        assert len(results["initial"][m]) == 2
        assert set(results["summary"][m]) == {"acc", "bwt", "fwt", "forgetting", "mpi", "msi",
                                              "mpsi", "mpsr"}
    assert results["versions"]["avalanche-lib"] == "0.6.0"
    assert len(results["train_loss"]) == 2 and len(results["train_loss"][0]) == 3
    assert results["counts"]["AVA"]["test"] == 40  # generic_test.jpgl: 200 // 5


def test_plots_are_written(finished_run):
    out, _ = finished_run
    for name in ("srcc_matrix.png", "plcc_matrix.png", "srcc_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_has_every_value(finished_run):
    out, results = finished_run
    df = pd.read_csv(out / "metrics.csv")
    srcc = df[df["name"] == "SRCC_Exp/eval_phase/test_stream/Task001/Exp001"]["value"].tolist()
    assert srcc == pytest.approx([results["initial"]["srcc"][1],
                                  *(row[1] for row in results["matrices"]["srcc"])])
    assert df["name"].str.startswith("Loss_Epoch/train_phase").sum() == 2 * 3


def test_the_model_learns_each_experience(finished_run):
    _, results = finished_run
    R, b = results["matrices"]["srcc"], results["initial"]["srcc"]
    for j in range(2):
        assert R[j][j] > b[j] + 0.2, (R, b)
    assert R[0][0] > 0.4 and R[1][1] > 0.4


def test_splits_on_disk_have_no_leakage(finished_run):
    out, results = finished_run
    parts = {}
    for exp in results["experiences"]:
        for part in ("train", "val", "test"):
            ids = (out / "splits" / exp / f"{part}.txt").read_text().split()
            assert len(ids) == results["counts"][exp][part]
            parts[exp, part] = set(ids)
    all_test = parts["EVA", "test"] | parts["AVA", "test"]
    for exp in results["experiences"]:
        assert not (parts[exp, "train"] | parts[exp, "val"]) & all_test
    assert results["removed_for_leakage"] > 0  # EVA is inside AVA: the guard had work to do


def test_predictions_reproduce_the_matrix(finished_run):
    out, results = finished_run
    stages = ["initial", "after_0", "after_1"]
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(stages)
    for i, stage in enumerate(stages):
        for j, exp in enumerate(results["experiences"]):
            df = pd.read_csv(out / "predictions" / stage / f"{exp}.csv", dtype={"image_id": str})
            assert list(df.columns) == ["image_id", "target", "prediction"]
            test_ids = (out / "splits" / exp / "test.txt").read_text().split()
            assert sorted(df["image_id"]) == sorted(test_ids)
            want = results["initial"]["srcc"][j] if i == 0 else \
                results["matrices"]["srcc"][i - 1][j]
            assert srcc(df["target"], df["prediction"]) == pytest.approx(want, abs=1e-9)
    lo, hi = results["scales"]["EVA"]
    df = pd.read_csv(out / "predictions" / "after_0" / "EVA.csv")
    assert df["target"].between(lo, hi).all() and df["prediction"].between(lo, hi).all()


def test_python_api_and_avalanche_metric_names(tiny_demo):
    """The README's notebook path, and metric names the Avalanche way."""
    from experiments.results import StagePredictions, compute_results
    from experiments.run import make_trainer, model_from_config, stream_from_config
    from strategies import make_strategy

    config = load_config(DEMO, tiny_overrides(tiny_demo) + ["train.epochs=1"])
    stream = stream_from_config(config)
    model = model_from_config(config)
    parts = make_strategy("l2", l2_lambda=1.0)
    trainer = make_trainer(config, model, parts.plugins, torch.device("cpu"))
    preds = StagePredictions(stream.experiences)
    preds.add("initial", trainer.evaluate(stream.benchmark.test_stream))
    for i, experience in enumerate(stream.benchmark.train_stream):
        trainer.train(experience)
        preds.add(f"after_{i}", trainer.evaluate(stream.benchmark.test_stream))
    results = compute_results(preds, "none")

    metrics = trainer.strategy.evaluator.get_last_metrics()
    name = "SRCC_Exp/eval_phase/test_stream/Task001/Exp001"
    assert metrics[name] == pytest.approx(results["matrices"]["srcc"][1][1])
    assert metrics["PLCC_Exp/eval_phase/test_stream/Task000/Exp000"] == pytest.approx(
        results["matrices"]["plcc"][1][0])
    assert "KRCC_Exp/eval_phase/test_stream/Task000/Exp000" in metrics
    assert len(results["matrices"]["srcc"]) == 2
    # The pretrained MobileNetV2's scores vary for a real reason: every cell is a number.
    assert results["constant_predictions"] == []
    assert all(isinstance(v, float) for row in results["matrices"]["srcc"] for v in row)


def test_predictions_constant_to_float_precision_are_flagged():
    """What an untrained MobileNet in eval mode gives (its activations vanish without
    pretrained BatchNorm statistics): scores equal up to float32 rounding."""
    from experiments.results import StagePredictions

    class Exp:
        def __init__(self, name):
            self.name = name

    preds = StagePredictions([Exp("EVA"), Exp("AVA")])
    rows, targets = np.arange(5), np.linspace(0, 1, 5)
    flat = np.full(5, 0.25, dtype=np.float32) + np.float32(1e-8) * np.arange(5)
    varied = np.array([0.1, 0.3, 0.2, 0.5, 0.4])
    preds.add("initial", {0: (rows, targets, flat.astype(np.float64)), 1: (rows, targets, varied)})
    preds.add("after_0", {0: (rows, targets, varied), 1: (rows, targets, np.zeros(5))})
    assert preds.constant() == ["initial on EVA", "after_0 on AVA"]


def run_cli(capsys, *args):
    code = main(["run", str(DEMO), *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("override, message", [
    ("train.epoch=1", "unknown config key 'train.epoch'"),
    ("strategy.name=magic", "unknown strategy 'magic'; choose one of"),
    ("strategy.ewc_lambda=1", "strategy 'naive' has no hyperparameter ['ewc_lambda']"),
    ("model.backbone=resnet_nope", "unknown backbone 'resnet_nope'"),
    ("stream.AVA.root=/nonexistent/AVA", "dataset root /nonexistent/AVA does not exist"),
])
def test_bad_input_one_line_error_and_nothing_written(tiny_demo, tmp_path, capsys, override,
                                                      message):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "--out", str(out), *tiny_overrides(tiny_demo),
                        "model.pretrained=false", override)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("iqacl: error: ") and message in err[0], err
    assert not out.exists()


def test_bad_label_file_names_file_and_line(tiny_demo, tmp_path, capsys):
    import shutil

    ava = tmp_path / "AVA"
    shutil.copytree(tiny_demo / "AVA", ava)
    lines = (ava / "AVA.txt").read_text().splitlines()
    lines[4] = lines[4].replace(" ", ",", 3)
    (ava / "AVA.txt").write_text("\n".join(lines) + "\n")
    code, err = run_cli(capsys, "--out", str(tmp_path / "run"), *tiny_overrides(tiny_demo),
                        f"stream.AVA.root={ava}")
    assert code == 2 and len(err) == 1
    assert f"{ava / 'AVA.txt'}, line 5: 12 fields" in err[0]


def test_predict_scores_images_like_the_run_did(finished_run, tiny_demo, tmp_path):
    """`iqacl predict` on EVA's test images reproduces the run's own predictions."""
    out, results = finished_run
    ref = pd.read_csv(out / "predictions" / "after_0" / "EVA.csv", dtype={"image_id": str})
    images = tmp_path / "imgs"
    images.mkdir()
    for image_id in ref["image_id"]:
        (images / f"{image_id}.jpg").write_bytes(
            (tiny_demo / "EVA/images/EVA_together" / f"{image_id}.jpg").read_bytes())
    (images / "broken.jpg").write_bytes(b"not an image")
    code = main(["predict", str(out), str(images), "--stage", "after_0", "--task", "0",
                 "--out", str(tmp_path / "p.csv")])
    assert code == 0
    got = pd.read_csv(tmp_path / "p.csv")
    assert len(got) == len(ref)  # the broken file is skipped, not fatal
    got["image_id"] = got["path"].map(lambda p: Path(p).stem)
    merged = ref.merge(got, on="image_id")
    assert merged["score"].to_numpy() == pytest.approx(merged["prediction"].to_numpy(),
                                                       abs=1e-4)


def test_unwritable_run_folder_is_refused_before_training(tiny_demo, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "--out", str(blocker / "run"), *tiny_overrides(tiny_demo))
    assert code == 2 and "cannot write the run folder" in err[0]


def test_finished_run_is_never_overwritten(finished_run, capsys):
    out, _ = finished_run
    before = (out / "results.json").read_text()
    code, err = run_cli(capsys, "--out", str(out))
    assert code == 2 and "already holds a finished run" in err[0]
    assert (out / "results.json").read_text() == before


def test_console_script_exits_nonzero_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("iqacl")
    proc = subprocess.run([str(exe), "run", str(DEMO), "train.epochs=-1"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "iqacl: error: config key 'train.epochs' must be at least 1"
