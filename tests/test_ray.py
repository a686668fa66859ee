"""`iqacl grid --executor ray` on a real local Ray instance (loopback only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.errors import UserError
from experiments.grid import Job, grid_jobs, run_grid
from experiments.ray_executor import run_in_task, unpack
from experiments.table import group_runs, render

ray = pytest.importorskip("ray")  # installed by `make install` (the dev extra)


def grid_file(tmp_path: Path, root: Path, broken: bool, ray_block: str = "ray: {num_cpus: 1, "
              "max_retries: 1}\n", variants: str | None = None) -> Path:
    path = tmp_path / "g.yaml"
    variants = variants or "[{label: naive, overrides: [strategy.name=naive]}, " \
        "{label: l2, overrides: [strategy.name=l2]}" + (
            ", {label: broken, overrides: [stream.EVA.root=/nonexistent/EVA]}"
            if broken else "") + "]"
    path.write_text(
        "base: experiments/configs/demo.yaml\nseeds: [0, 1]\n"
        f"overrides: [stream.EVA.root={root / 'EVA'}, stream.AVA.root={root / 'AVA'},"
        " data.image_size=48, train.epochs=1, log.progress=false,"
        " log.plots=false, log.csv=false, eval.validation=false]\n"
        f"variants: {variants}\n" + ray_block)
    return path


@pytest.fixture(scope="module")
def local_ray():
    # Room for a task with the driver's thread count (the default num_cpus).
    ray.init(num_cpus=max(2, torch.get_num_threads()), include_dashboard=False,
             log_to_driver=False)
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
    assert _table(results) == _table(local)
    assert "0.000 ± 0.000 | 0.000 ± 0.000" not in _table(results)  # real numbers compared
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


def _table(runs: list[dict]) -> str:
    """The table as printed, but for wall times (machine load differs between executors)."""
    return render(group_runs([{**r, "wall_time_s": 0.0} for r in runs]), "srcc", "md")


def test_a_ray_grid_at_default_settings_prints_the_local_table(tiny_demo, tmp_path, local_ray):
    # Nothing about threads or CPUs anywhere: what a user who has not read the README runs.
    grid = grid_file(tmp_path, tiny_demo, False, ray_block="",
                     variants="[{label: ewc, overrides: [strategy.name=ewc]}]")
    local, _ = run_grid(grid, tmp_path / "local")
    remote, failures = run_grid(grid, tmp_path / "ray", executor="ray")
    assert failures == []
    assert [r["threads"] for r in local + remote] == [torch.get_num_threads()] * 4
    assert _table(remote) == _table(local)
    assert [r["matrices"] for r in remote] == [r["matrices"] for r in local]


def test_a_grid_asking_more_cpus_than_any_node_has_stops_at_once(tiny_demo, tmp_path,
                                                                  local_ray):
    grid = grid_file(tmp_path, tiny_demo, False, ray_block="ray: {num_cpus: 512}\n")
    with pytest.raises(UserError, match=r"each run asks for 512 CPUs \(the grid's "
                                        r"ray.num_cpus\), but the largest node .* has \d+"):
        run_grid(grid, tmp_path / "ray", executor="ray")
