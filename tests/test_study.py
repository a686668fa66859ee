"""The strategy study's claims (slow: ~40 min; `make test-slow`, reuses `make tables` runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_strategies_hold_back_forgetting_on_the_demo_stream():
    from experiments.grid import run_grid

    if not (ROOT / "data/demo/.complete").exists():
        pytest.skip("needs the demo data: `make demo-data`")
    results, _ = run_grid(ROOT / "experiments/tables/demo.yaml", ROOT / "runs/tables/demo",
                           ["log.progress=false"])

    def mean(label, key):
        return np.mean([r["summary"]["srcc"][key] for r in results if r["label"] == label])

    failures = []
    for label in ("ewc", "l2", "replay", "lwf"):
        if not mean(label, "forgetting") < mean("naive", "forgetting"):
            failures.append(f"{label} forgets no less than naive")
    if not mean("packnet", "forgetting") < mean("naive (per-task heads)", "forgetting"):
        failures.append("packnet forgets no less than multi-head naive")
    agnostic = {r["label"] for r in results if not r["uses_task_labels"]}
    best = max(agnostic, key=lambda label: mean(label, "acc"))
    if best != "joint":
        failures.append(f"joint is not the best ACC among task-agnostic strategies ({best} is)")
    assert not failures, "; ".join(failures)
