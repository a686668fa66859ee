"""W&B: an offline run read back record by record; W&B failures never cost a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from experiments.config import load_config
from experiments.run import run
from experiments.wandb_log import read_wandb_records

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def config(root: Path, *extra: str) -> dict:
    return load_config(DEMO, [
        f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
        "data.image_size=48", "train.epochs=1", "log.progress=false",
        "log.plots=true", "log.wandb.enabled=true", "log.wandb.mode=offline", *extra])


def as_dict(items) -> dict:
    """History/summary items -> {key: value}; nested keys (media, tables) -> sub-dicts."""
    out: dict = {}
    for item in items:
        keys = [item.key] if item.key else list(item.nested_key)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


@pytest.fixture(autouse=True)
def quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_offline_run_holds_summary_and_matrix_table(tiny_demo, tmp_path):
    out = tmp_path / "run"
    results = run(config(tiny_demo, "log.wandb.tags=[demo, test]", "train.epochs=2",
                         "train.select=best_val"), out)
    (wandb_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    summary, history = {}, []
    for record in read_wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update(as_dict(record.summary.update))
        elif kind == "history":
            history.append(as_dict(record.history.item))
    for metric in ("srcc", "plcc"):
        for key, value in results["summary"][metric].items():
            assert summary[f"{metric}/{key}"] == pytest.approx(value) if value is not None \
                else summary[f"{metric}/{key}"] is None
    assert summary["uses_task_labels"] is False
    scalars = {k: v for row in history for k, v in row.items()}
    assert scalars["SRCC_Exp/eval_phase/test_stream/Task001/Exp001"] == pytest.approx(
        results["matrices"]["srcc"][1][1])
    # The full matrix as a wandb.Table: the history row points at its JSON file.
    (table_ref,) = [row["matrix/srcc"] for row in history if "matrix/srcc" in row]
    table = json.loads((wandb_file.parent / "files" / table_ref["path"]).read_text())
    assert table["columns"] == ["stage", "EVA", "AVA"]
    assert table["data"][0][1:] == pytest.approx(results["initial"]["srcc"])
    assert table["data"][2][1:] == pytest.approx(results["matrices"]["srcc"][1])
    assert any("matrix_so_far/srcc_heatmap" in row for row in history)
    # train.select=best_val: each epoch's validation SRCC, the curve results.json holds.
    for name in ("EVA", "AVA"):
        curve = [row[f"Val_SRCC_Epoch/{name}"] for row in history
                 if f"Val_SRCC_Epoch/{name}" in row]
        selection = results["training"]["per_experience"][name]["selection"]
        assert curve == pytest.approx(selection["curve"]) and len(curve) == 2


def test_wandb_that_cannot_start_never_stops_a_run(tiny_demo, tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        results = run(config(tiny_demo, "log.wandb.mode=online"), tmp_path / "run")
    assert (tmp_path / "run" / "results.json").exists() and results["matrices"]["srcc"]
    warnings = [r.message for r in caplog.records if "W&B" in r.message]
    assert len(warnings) == 1 and "could not start in online mode" in warnings[0]
    assert warnings[0].endswith("the run goes on without W&B")


def test_online_failure_falls_back_to_offline(tiny_demo, tmp_path, monkeypatch, caplog):
    import wandb

    real_init = wandb.init

    def online_fails(**kwargs):
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("not logged in")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", online_fails)
    with caplog.at_level(logging.WARNING):
        run(config(tiny_demo, "log.wandb.mode=online"), tmp_path / "run")
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    warnings = [r.message for r in caplog.records if "W&B" in r.message]
    assert len(warnings) == 1 and warnings[0].endswith("the run goes on offline")


def test_a_crash_inside_wandb_never_loses_results(tiny_demo, tmp_path, monkeypatch, caplog):
    import wandb

    real_init = wandb.init

    def init_then_break(**kwargs):
        run_ = real_init(**kwargs)

        def boom(*a, **k):
            raise RuntimeError("wandb internal error")

        run_.log = boom
        return run_

    monkeypatch.setattr(wandb, "init", init_then_break)
    with caplog.at_level(logging.WARNING):
        results = run(config(tiny_demo), tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == results
    warnings = [r.message for r in caplog.records if "W&B" in r.message]
    assert len(warnings) == 1 and "wandb internal error" in warnings[0]


def test_no_secret_is_written(tiny_demo, tmp_path, monkeypatch):
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    out = tmp_path / "run"
    run(config(tiny_demo), out)
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".txt", ".log", ".yaml"):
            assert secret not in path.read_text(errors="ignore"), path
