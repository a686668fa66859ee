"""Sweeps: reports from results (mean ± std over seeds), and writing them into a file."""

from __future__ import annotations

import pytest

from benchmarks.errors import UserError
from experiments.grid import read_grid, report, write_report


def result(label, seed, acc, forgetting, name="naive", lam=None, task_labels=False):
    return {
        "label": label, "seed": seed, "experiences": ["EVA", "AVA"],
        "uses_task_labels": task_labels,
        "config": {"strategy": {"name": name, **({"lam": lam} if lam else {})}},
        "summary": {"srcc": {"acc": acc, "forgetting": forgetting, "bwt": -forgetting,
                             "mpi": 0.8}},
        "matrices": {"srcc": [[0.8, 0.1], [0.8 - forgetting, 2 * acc - 0.8 + forgetting]]},
        "validation": {"matrices": {"srcc": [[0.5, 0.0], [acc, acc]]}},
    }


def test_report_means_and_stds_over_seeds():
    text = report([result("naive", 0, 0.4, 0.6), result("naive", 1, 0.6, 0.4),
                   result("packnet", 0, 0.7, 0.0, task_labels=True)])
    lines = text.splitlines()
    assert lines[0].startswith("| variant | task labels at test | ACC | forgetting |")
    assert "| naive | no | 0.500 ± 0.141 | 0.500 ± 0.141 |" in lines[2]
    assert lines[3].startswith("| packnet | yes | 0.700 | 0.000 |") and lines[3].endswith("| 1 |")


def test_best_by_validation_is_marked_per_strategy():
    text = report([result("ewc 1", 0, 0.4, 0.1, "ewc", 1), result("ewc 10", 0, 0.6, 0.1, "ewc", 10),
                   result("l2 1", 0, 0.3, 0.1, "l2", 1)], select="strategy.name")
    assert "| **ewc 10** |" in text and "| ewc 1 |" in text and "| **l2 1** |" in text


def test_write_report_replaces_only_the_block(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\noutro\n")
    write_report("new table", doc, "t")
    assert doc.read_text() == "intro\n<!-- t:start -->\nnew table\n<!-- t:end -->\noutro\n"
    with pytest.raises(UserError, match="no '<!-- other:start -->'"):
        write_report("x", doc, "other")


def test_shipped_grids_are_valid():
    from pathlib import Path

    from experiments.config import load_config

    root = Path(__file__).parents[1] / "experiments"
    for path in sorted([*root.glob("grids/*.yaml"), *root.glob("tables/*.yaml")]):
        spec = read_grid(path)
        for variant in spec["variants"]:
            load_config(spec["base"], [*spec["overrides"], *variant.overrides])


def test_grid_expands_the_product(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("base: experiments/configs/demo.yaml\nseeds: [0, 1]\n"
                    "grid: {strategy.name: [naive, ewc], train.lr: [0.001]}\n")
    spec = read_grid(path)
    assert [v.label for v in spec["variants"]] == ["strategy.name=naive train.lr=0.001",
                                                   "strategy.name=ewc train.lr=0.001"]
    assert spec["variants"][1].overrides == ["strategy.name=ewc", "train.lr=0.001"]
    path.write_text("base: x.yaml\ngrid: {seed: []}\n")
    with pytest.raises(UserError, match="grid key 'seed' needs a non-empty list"):
        read_grid(path)


def test_a_relaunched_grid_redoes_only_unfinished_runs(tiny_demo, tmp_path, caplog):
    import logging
    import shutil

    from experiments.grid import run_grid

    path = tmp_path / "g.yaml"
    path.write_text(
        "base: experiments/configs/demo.yaml\nseeds: [0, 1]\n"
        f"overrides: [stream.EVA.root={tiny_demo / 'EVA'}, stream.AVA.root={tiny_demo / 'AVA'},"
        " data.image_size=48, train.epochs=1, log.progress=false,"
        " log.plots=false, eval.validation=false]\n"
        "variants: [{label: naive, overrides: []}]\n")
    first, _ = run_grid(path, tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / "naive-s1")  # as if that run had never finished
    with caplog.at_level(logging.INFO):
        second, _ = run_grid(path, tmp_path / "runs")
    assert "naive seed 0: done already" in caplog.text
    assert "[2/2] naive seed 1\n" in caplog.text + "\n"
    assert [r["matrices"] for r in second] == [r["matrices"] for r in first]
