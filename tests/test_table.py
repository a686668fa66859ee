"""Tables: seeds averaged, settings never; intransigence from joint; md, LaTeX, CSV."""

from __future__ import annotations

import copy
import json

import pytest

from benchmarks.errors import UserError
from experiments.config import DEFAULTS
from experiments.table import group_runs, load_runs, mean_matrices, render, rows


def result(strategy="naive", seed=0, R=((0.8, 0.1), (0.3, 0.9)), protocol="stream",
           task_labels=False, **hparams):
    config = copy.deepcopy(DEFAULTS)
    config["seed"], config["strategy"] = seed, {"name": strategy, **hparams}
    config["stream"] = [{"name": "EVA"}, {"name": "AVA"}]
    from benchmarks.metrics import summary

    R = [list(r) for r in R]
    s = summary(R, [0.0, 0.0]) if protocol == "stream" else \
        {"acc": sum(R[0]) / 2, "bwt": None, "fwt": None, "forgetting": None, "mpi": None,
         "msi": None, "mpsi": None}
    return {"config": config, "strategy": strategy, "protocol": protocol,
            "uses_task_labels": task_labels, "experiences": ["EVA", "AVA"],
            "matrices": {"srcc": R}, "summary": {"srcc": s}, "wall_time_s": 10.0 + seed,
            "memory": {"extra_bytes": 2**20 * seed}}


def test_seeds_are_averaged_but_hyperparameters_are_not():
    runs = [result("ewc", 0, ewc_lambda=1.0), result("ewc", 1, ewc_lambda=1.0),
            result("ewc", 0, ewc_lambda=10.0)]
    groups = group_runs(runs)
    assert [(g.label, len(g.runs)) for g in groups] == [("ewc (ewc_lambda=1.0)", 2),
                                                        ("ewc (ewc_lambda=10.0)", 1)]


def test_a_grid_over_backbones_labels_every_backbone():
    runs = []
    for strategy in ("naive", "ewc"):
        for backbone in ("mobilenet_v2", "resnet18", "timm/resnet18"):
            runs.append(result(strategy))
            runs[-1]["config"]["model"]["backbone"] = backbone
    labels = [g.label for g in group_runs(runs)]
    assert labels[:3] == ["naive (backbone=mobilenet_v2)", "naive (backbone=resnet18)",
                          "naive (backbone=timm/resnet18)"]  # no value is the usual one
    cols, _ = rows(group_runs(runs), "srcc")
    assert "intransigence" not in cols  # no joint run to measure it against


def test_labels_name_only_what_sets_a_row_apart():
    runs = [result("naive"), result("ewc"), result("naive"), result("packnet", task_labels=True)]
    runs[2]["config"]["model"]["heads"] = "per_task"
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["naive", "ewc", "naive (heads=per_task)", "packnet"]


def test_values_and_intransigence():
    runs = [result("naive", 0, ((0.8, 0.1), (0.2, 0.9))),
            result("naive", 1, ((0.6, 0.1), (0.4, 0.7))),
            result("joint", 0, ((0.9, 0.95),), protocol="joint"),
            result("packnet", 0, ((0.7, 0.0), (0.7, 0.6)), task_labels=True)]
    _, body = rows(group_runs(runs), "srcc")
    naive = next(r for r in body if r["strategy"] == "naive")
    assert naive["final EVA"] == pytest.approx((0.3, 0.1414), abs=1e-3)
    assert naive["forgetting"] == pytest.approx((0.4, 0.2828), abs=1e-3)  # 0.6 and 0.2
    # intransigence: joint R[j] - R[j][j], averaged over j, then over seeds
    assert naive["intransigence"][0] == pytest.approx(((0.9 - 0.8 + 0.95 - 0.9)
                                                       + (0.9 - 0.6 + 0.95 - 0.7)) / 4)
    assert naive["wall time (s)"] == pytest.approx((10.5, 0.7071), abs=1e-3)
    joint = next(r for r in body if r["strategy"] == "joint")
    assert joint["BWT"] is None and joint["intransigence"] is None
    assert body[-1]["strategy"] == "packnet"  # task-aware rows come last


def test_markdown_latex_csv():
    runs = [result("naive", 0), result("joint", 0, ((0.9, 0.95),), protocol="joint"),
            result("packnet", 0, ((0.7, 0.0), (0.7, 0.6)), task_labels=True)]
    groups = group_runs(runs)
    md = render(groups, fmt="md")
    assert "| strategy | task labels | final EVA | final AVA | ACC |" in md
    assert "—" in md and "**0.950**" in md  # joint's AVA is best
    assert "| packnet | yes | **0.700** |" in md  # best among task-aware rows
    assert "± 0.000" not in md  # one seed: the spread is unknown, not zero
    tex = render(groups, fmt="latex")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    assert "task-aware" in tex and tex.index("task-aware") < tex.index("packnet")
    assert tex.count("{") == tex.count("}") and "—" not in tex
    csv = render(groups, fmt="csv").splitlines()
    assert csv[0].startswith("strategy,task labels,final EVA,final EVA std")
    assert len(csv) == 4
    assert csv[1].split(",")[2:4] == ["0.3", ""]  # naive's final EVA, its std unknown
    assert "| after \\ on | EVA | AVA |" in mean_matrices(groups)
    with pytest.raises(UserError, match="unknown table format"):
        render(groups, fmt="html")


def test_load_runs_from_folders(tmp_path):
    for i in range(2):
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(result("naive", i)))
    assert len(load_runs([tmp_path])) == 2
    assert len(load_runs([tmp_path / "r0"])) == 1
    with pytest.raises(UserError, match="no results.json"):
        load_runs([tmp_path / "missing"])


def test_table_and_help_do_not_import_torch_or_avalanche(tmp_path):
    import subprocess
    import sys

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(result("naive")))
    code = ("import sys; from experiments.cli import main; main(['table', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'avalanche', 'wandb') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "| naive | no |" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", "import sys; from experiments.cli import "
                           "build_parser; build_parser(); assert 'torch' not in sys.modules"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_runs_with_another_thread_count_are_not_averaged_as_seeds():
    runs = [{**result("naive", 0), "threads": 2}, {**result("naive", 1), "threads": 2},
            {**result("naive", 2), "threads": 1}]
    groups = group_runs(runs)
    assert [(g.label, len(g.runs)) for g in groups] == [("naive (threads=2)", 2),
                                                        ("naive (threads=1)", 1)]


def test_the_same_run_twice_is_not_averaged_as_two_seeds():
    a, b = {**result("naive", 0), "_dir": "runs/a"}, {**result("naive", 0), "_dir": "runs/b"}
    with pytest.raises(UserError, match=r"runs/a and runs/b are the same setting at the same "
                                        r"seed \(0\); pass only one of them"):
        group_runs([a, b])
    assert "mean of 1 seed)" in mean_matrices(group_runs([a]))


def test_the_biqa_metric_columns_by_name():
    # R = [[0.8, 0.1], [0.3, 0.9]]: mSRCC = (0.3 + 0.9) / 2 = 0.6, mPI = 0.85,
    # mPSR = (0.8 + 0.9 * 0.3 / 0.8) / 2 = 0.56875
    text = render(group_runs([result("naive")]), summary=["mSRCC", "mPI", "mPSR"])
    head, _, row = text.splitlines()[:3]
    assert "| mSRCC | mPI | mPSR |" in head and "ACC" not in head
    assert "| 0.600 | 0.850 | 0.569 |" in row.replace("**", "")
    with pytest.raises(UserError, match="unknown table column mSRC"):
        render(group_runs([result("naive")]), summary=["mSRC"])


def test_rows_with_constant_predictions_are_marked_as_noise():
    noisy = {**result("naive"), "constant_predictions": ["after_0 on EVA"]}
    groups = group_runs([noisy, result("ewc")])
    assert [g.label for g in groups] == ["naive †", "ewc"]
    md = render(groups)
    assert "| naive † | no | 0.300 |" in md and "| ewc | no | **0.300** |" in md  # never best
    assert "† Some of the row's predictions are constant" in md
    assert r"naive \dag{}" in render(groups, fmt="latex")
    assert "constant to float" not in render(group_runs([result("ewc")]))
