"""`iqacl grid --executor ray`: each run of a grid is a Ray task.

Ray schedules, places (`num_cpus` / `num_gpus` per run, from the grid's
`ray:` block) and retries (`max_retries`, also on exceptions); this module
only turns a grid job into a task and its outcome into results or a failure.

Where results go: the driver leaves a marker file in the output folder. A
task that sees the marker at the same path shares the driver's filesystem
and writes the run folder in place (and resumes it from its last checkpoint
when it was interrupted). Otherwise the task runs in a scratch folder and
returns the run folder's files, which the driver writes; an interrupted run
then starts again.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.errors import UserError

from .jobs import Failure, Job, run_job

log = logging.getLogger(__name__)
# num_cpus None: the driver's torch thread count, so that each task runs with as many
# threads as a local run (the thread count changes a run's numbers).
RAY_DEFAULTS = {"num_cpus": None, "num_gpus": 0, "max_retries": 1}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def run_in_task(job: Job, marker: str, threads: int) -> tuple[dict, bytes | None]:
    """The body of one Ray task: (results, None) in place, or (results, packed run folder).

    `threads` comes from the driver: Ray sets OMP_NUM_THREADS in its workers, so the
    worker's own default thread count says nothing about a local run's.
    """
    import torch

    torch.set_num_threads(max(1, threads))  # the same thread count wherever a run lands
    if Path(marker).is_file():
        return run_job(job), None
    with tempfile.TemporaryDirectory(prefix="iqacl-ray-") as scratch:
        local = Job(job.label, job.seed, job.config, Path(scratch) / job.run_dir.name)
        result = run_job(local)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(local.run_dir, arcname=".")
        return result, buf.getvalue()


def unpack(packed: bytes, run_dir: Path) -> None:
    """Write a run folder a task returned (no path may leave `run_dir`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        tar.extractall(run_dir, filter="data")


def run_on_ray(jobs: list[Job], out: Path, options: dict, address: str | None = None,
               progress: bool = True) -> tuple[list[dict], list[Failure]]:
    """Submit every unfinished job; collect results as they finish; report failures."""
    ray = _import_ray()
    unknown = sorted(set(options) - set(RAY_DEFAULTS))
    if unknown:
        raise UserError(f"grid key 'ray.{unknown[0]}' is unknown; valid: {sorted(RAY_DEFAULTS)}")
    opts = {**RAY_DEFAULTS, **options}
    if opts["num_cpus"] is None:
        import torch

        opts["num_cpus"] = torch.get_num_threads()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    _check_fits(ray, int(opts["num_cpus"]), "num_cpus" in options)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".ray-shared-{uuid.uuid4().hex}"
    marker.write_text("the grid's driver is writing here\n")
    task = ray.remote(run_in_task).options(
        num_cpus=opts["num_cpus"], num_gpus=opts["num_gpus"],
        max_retries=opts["max_retries"], retry_exceptions=True)
    done: dict[int, dict] = {}
    pending = {}
    for i, job in enumerate(jobs):
        if (job.run_dir / "results.json").exists():
            done[i] = run_job(job, i, len(jobs))  # finished on an earlier launch: read only
        else:
            pending[task.remote(job, str(marker), int(opts["num_cpus"]))] = i
    failed: dict[int, Failure] = {}
    bar = _Progress(len(jobs), len(done), progress)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            job = jobs[i]
            try:
                result, packed = ray.get(ready[0])
            except Exception as exc:  # the task failed after its retries
                failed[i] = Failure(job.label, job.seed, job.run_dir, _reason(exc))
                log.error("%s seed %d failed: %s", job.label, job.seed, failed[i].error)
            else:
                if packed is not None:
                    unpack(packed, job.run_dir)
                done[i] = result
            bar.update(len(done), len(pending), len(failed))
    finally:
        bar.close()
        marker.unlink(missing_ok=True)
    return [done[i] for i in sorted(done)], [failed[i] for i in sorted(failed)]


def _check_fits(ray, num_cpus: int, asked: bool) -> None:
    """A task asking more CPUs than any node has would wait forever: say so instead."""
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")),
                  default=0)
    if num_cpus > largest:
        why = "the grid's ray.num_cpus" if asked else "by default the driver's torch thread count"
        raise UserError(f"ray: each run asks for {num_cpus} CPUs ({why}), but the largest "
                        f"node of the Ray cluster has {int(largest)}; set ray.num_cpus in the "
                        "grid file (a run's numbers depend on its thread count)")


def _reason(exc: Exception) -> str:
    """The task's own error, not Ray's wrapper: its last line."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


class _Progress:
    """Runs done / running / failed on the driver (a tqdm bar on a terminal, else log lines)."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.bar, self.last = total, None, 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="grid on ray", unit="run")

    def update(self, done: int, running: int, failed: int) -> None:
        text = f"done {done}, running {running}, failed {failed}"
        if self.bar is not None:
            self.bar.n = done + failed
            self.bar.set_postfix_str(text)
        elif time.time() - self.last > 30 or not running:
            log.info("grid: %s of %d", text, self.total)
            self.last = time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
