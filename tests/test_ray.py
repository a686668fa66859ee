"""`iqacl grid --executor ray` on a real local Ray instance (loopback only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.grid import Job, grid_jobs, run_grid
from experiments.ray_executor import run_in_task, unpack
from experiments.table import group_runs, render

ray = pytest.importorskip("ray")  # installed by `make install` (the dev extra)


def grid_file(tmp_path: Path, root: Path, broken: bool) -> Path:
    path = tmp_path / "g.yaml"
    variants = "[{label: naive, overrides: [strategy.name=naive]}, " \
               "{label: l2, overrides: [strategy.name=l2]}" + (
                   ", {label: broken, overrides: [stream.EVA.root=/nonexistent/EVA]}"
                   if broken else "") + "]"
    path.write_text(
        "base: experiments/configs/demo.yaml\nseeds: [0, 1]\n"
        f"overrides: [stream.EVA.root={root / 'EVA'}, stream.AVA.root={root / 'AVA'},"
        " data.image_size=48, train.epochs=1, model.pretrained=false, log.progress=false,"
        " log.plots=false, log.csv=false, eval.validation=false]\n"
        f"variants: {variants}\n"
        "ray: {num_cpus: 1, max_retries: 1}\n")
    return path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_grid_gives_the_local_table_and_reports_a_failing_run(tiny_demo, tmp_path,
                                                                   local_ray, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count each Ray task uses (num_cpus)
    try:
        local, _ = run_grid(grid_file(tmp_path, tiny_demo, False), tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    results, failures = run_grid(grid_file(tmp_path, tiny_demo, True), tmp_path / "ray",
                                 executor="ray")
    assert [(f.label, f.seed) for f in failures] == [("broken", 0), ("broken", 1)]
    assert "/nonexistent/EVA" in failures[0].error
    assert sorted((r["label"], r["seed"]) for r in results) == \
        [("l2", 0), ("l2", 1), ("naive", 0), ("naive", 1)]
    # The same table, but for the wall-time column (machine load differs between executors).
    def table(runs):
        return render(group_runs([{**r, "wall_time_s": 0.0} for r in runs]), "srcc", "md")

    assert table(results) == table(local)
    assert "0.000 ± 0.000 | 0.000 ± 0.000" not in table(results)  # real numbers were compared
    for r in results:  # written where the driver expects them (here, a shared filesystem)
        run_dir = tmp_path / "ray" / f"{r['label']}-s{r['seed']}"
        assert json.loads((run_dir / "results.json").read_text())["matrices"] == r["matrices"]
    assert not list((tmp_path / "ray").glob(".ray-shared-*"))  # the marker is cleaned up
    # Re-launched: finished runs are skipped (read back), the broken ones are tried again.
    again, failures = run_grid(grid_file(tmp_path, tiny_demo, True), tmp_path / "ray",
                               executor="ray")
    assert len(again) == 4 and len(failures) == 2


def test_a_task_without_the_drivers_filesystem_returns_its_run_folder(tiny_demo, tmp_path):
    _, jobs = grid_jobs(grid_file(tmp_path, tiny_demo, False), tmp_path / "driver")
    job = jobs[0]
    threads = torch.get_num_threads()
    try:  # called here in the test's process, which it must leave as it was
        result, packed = run_in_task(job, str(tmp_path / "not-shared-marker"), 1)
    finally:
        torch.set_num_threads(threads)
    assert packed is not None and not job.run_dir.exists()  # nothing written on the "worker"
    unpack(packed, job.run_dir)
    on_disk = json.loads((job.run_dir / "results.json").read_text())
    assert on_disk["matrices"] == result["matrices"]
    assert (job.run_dir / "predictions").is_dir()
    assert isinstance(job, Job)
