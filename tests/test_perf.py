"""`make perf` at tiny sizes: it runs and writes a report with every row; no timing asserted."""

from __future__ import annotations

import json

from perf.__main__ import main
from perf.report import git, gpu_age, table
from perf.timing import Row


def test_perf_script_writes_every_row_at_tiny_sizes(tmp_path):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"device": "TestCard", "torch": "x", "cpu_cores": 1,
                               "command": "python -m perf --gpu",
                               "rows": [Row("gpu row", 2.0, 4.0, "images/s", 0.8).__dict__]}))
    out = tmp_path / "PERFORMANCE.md"
    assert main(["--tiny", "--out", str(out), "--json", str(gpu), "--work", str(tmp_path)]) == 0
    text = out.read_text()
    for what in ("loader, train transforms", "loader, eval transforms", "training loop",
                 "evaluation loop", "frozen-backbone stream run", "EWC per-sample importance",
                 "training step: fidelity loss", "per-epoch validation (best_val)",
                 "routing features over a weighted run", "routing at the protocol's scale",
                 "`iqacl report` of a six-dataset run", "report.html of a six-dataset run",
                 "K-means for one KonIQ-sized",
                 "TSN evaluation: one pass per seen task",
                 "building the stream", "peak memory building", "`iqacl --help`",
                 "peak memory of a demo-sized run"):
        assert what in text, what
    # The GPU file is folded in, with its card and a ratio computed from its numbers.
    assert "**TestCard**" in text and "| 0.50× | — | ≥ 0.8× | **FAIL** |" in text
    # Equality checks ride along with the timings: they are exact at these sizes.
    assert "float64 max |Δ|" in text and "(tolerance 1e-5) FAILED" not in text


def test_rows_judge_ratios_and_absolute_bounds():
    assert Row("r", 10.0, 1.0, "x/s", 5.0).passed is True
    assert Row("r", 4.0, 1.0, "x/s", 5.0).passed is False
    assert Row("t", 4.0, 0.1, "s", 5.0, higher_is_better=False, absolute=True).passed is True
    assert Row("t", 6.0, 0.1, "s", 5.0, higher_is_better=False, absolute=True).passed is False
    assert Row("m", 6.0, 1.0, "MB", None).passed is None
    # A target above what any method could reach on the machine is said to be, not failed.
    assert Row("b", 1.0, 1.0, "x/s", 5.0, bound=2.0).passed is None
    assert Row("b", 6.0, 1.0, "x/s", 5.0, bound=8.0).passed is True
    assert "out of reach here (bound 2.00×)" in table([Row("b", 1.0, 1.0, "x/s", 5.0,
                                                          bound=2.0)])[-1]
    # A ratio just under its target is not printed as the target.
    assert "| 0.947× | — | ≥ 0.95× | **FAIL** |" in table([Row("e", 0.947, 1.0, "x/s", 0.95)])[-1]
    assert "| 0.97× | — | ≥ 0.95× | pass |" in table([Row("e", 0.97, 1.0, "x/s", 0.95)])[-1]


def test_a_row_passes_on_the_median_of_its_repeats():
    # One lucky repeat does not pass a row, nor does one unlucky repeat fail it.
    lucky = Row("r", 1.0, 1.0, "x/s", 0.95, samples=[0.86, 0.90, 0.99])
    unlucky = Row("r", 1.0, 1.0, "x/s", 0.95, samples=[0.86, 0.96, 0.97])
    assert lucky.ratio == 0.90 and lucky.passed is False
    assert unlucky.ratio == 0.96 and unlucky.passed is True
    line = table([lucky])[-1]
    assert "| 0.90× | 0.86–0.99× (3) | ≥ 0.95× | **FAIL** |" in line
    build = Row("t", 9.0, 0.1, "s", 5.0, higher_is_better=False, absolute=True,
                samples=[2.0, 3.0, 9.0])
    assert build.judged == 3.0 and build.passed is True


def test_gpu_script_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    # A device session is short: the script it runs is checked here first.
    out = tmp_path / "gpu.json"
    assert main(["--gpu", "--tiny", "--json", str(out), "--work", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["commit"]
    rows = {r["what"].split(":")[0]: r for r in result["rows"]}
    assert list(rows) == ["ResNet18 bf16 training", "the training loader alone (the image cache, "
                          "no model) vs bare PyTorch's training rate", "ResNet18 bf16 evaluation",
                          "the evaluation loader alone (the run's worker pool, no model) vs bare "
                          "PyTorch's evaluation rate", "evaluation with each batch's images "
                          "copied on a side stream vs on the compute stream (Avalanche's)",
                          *[f"{part} with the workers' images written into a pinned ring vs "
                            "sent as new shared memory and pinned by the loader (PyTorch's way)"
                            for part in ("training", "evaluation")],
                          "ResNet18 bf16 training with nvJPEG "
                          "(`data.decode=gpu`, no cache) vs bare PyTorch",
                          "EWC per-sample importance on the GPU, ResNet18"]
    assert all(r["figure"] > 0 and r["baseline"] > 0 for r in result["rows"])
    assert [r["target"] for r in result["rows"]] == [0.8, None, 0.8, None, None, None, None,
                                                     None, 5.0]
    assert all("predictions identical" in result["rows"][i]["note"] for i in (4, 6))


def test_gpu_rows_say_which_code_they_measured():
    head = git("rev-parse", "--short", "HEAD")
    assert gpu_age(head) == f"Measured at commit `{head}`, the code as it is now."
    # A device run on a working tree with uncommitted changes cannot name its code.
    assert "uncommitted changes over commit `abc1234`" in gpu_age("abc1234-dirty")
    assert gpu_age(None) == "The commit these GPU rows measured is not known."

