"""Crash and resume: SIGKILL mid-experience, --resume, the same matrices as no crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.errors import UserError
from experiments.config import load_config
from experiments.run import run

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def overrides(root: Path, strategy: str) -> list[str]:
    return [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=48", "train.epochs=2",
            "log.progress=false", "log.plots=false", f"strategy.name={strategy}"]


@pytest.mark.parametrize("strategy", ["naive", "ewc", "packnet", "replay"])
def test_killed_run_resumes_to_the_same_matrices(strategy, tiny_demo, tmp_path):
    config = load_config(DEMO, overrides(tiny_demo, strategy))
    reference = run(config, tmp_path / "reference")

    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("iqacl")
    # Killed at iteration 2 of the second experience, a point the test chooses.
    proc = subprocess.run([str(exe), "run", str(DEMO), "--out", str(out),
                           *overrides(tiny_demo, strategy)],
                          env={**os.environ, "IQACL_KILL_AT": "1:2"}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (out / "results.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_1.pt"]
    torch.load(out / "checkpoints" / "step_1.pt", weights_only=True)  # no arbitrary pickle

    with pytest.raises(UserError, match="holds an unfinished run .* add --resume"):
        run(config, out)
    resumed = run(config, out, resume=True)
    for m in ("srcc", "plcc", "krcc"):
        assert resumed["matrices"][m] == reference["matrices"][m]
        assert resumed["initial"][m] == reference["initial"][m]
    assert resumed["train_loss"] == reference["train_loss"]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["after_0.pt", "after_1.pt"]
    assert not (out / "checkpoints").exists() and not (out / "started.json").exists()
    # metrics.csv keeps the finished experience's rows and logs the interrupted one again.
    assert (out / "metrics.csv").read_text() == (tmp_path / "reference/metrics.csv").read_text()


def iqacl(out: Path, root: Path, strategy: str, *args: str, kill: str | None = None):
    exe = Path(sys.executable).with_name("iqacl")
    env = {**os.environ, **({"IQACL_KILL_AT": kill} if kill else {})}
    return subprocess.run([str(exe), "run", str(DEMO), "--out", str(out),
                           *overrides(root, strategy), *args], env=env, capture_output=True,
                          text=True)


def test_resume_before_the_first_checkpoint_starts_over(tiny_demo, tmp_path):
    config = load_config(DEMO, overrides(tiny_demo, "naive"))
    reference = run(config, tmp_path / "reference")
    out = tmp_path / "killed"
    proc = iqacl(out, tiny_demo, "naive", kill="0:2")  # during the first experience
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "checkpoints").exists() and (out / "metrics.csv").exists()
    with pytest.raises(UserError, match=r"holds an unfinished run \(stopped before its first "
                                        r"checkpoint\); add --resume"):
        run(config, out)
    with pytest.raises(UserError, match="started.json: this folder holds a run started with "
                                        "another config"):
        run(load_config(DEMO, overrides(tiny_demo, "ewc")), out, resume=True)
    proc = iqacl(out, tiny_demo, "naive", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped before its first experience finished (no checkpoint); starting it again " \
           "from the beginning" in proc.stderr
    resumed = json.loads((out / "results.json").read_text())
    for m in ("srcc", "plcc", "krcc"):
        assert resumed["matrices"][m] == reference["matrices"][m]
    # What the killed attempt wrote is gone: metrics.csv holds this run's rows only.
    assert (out / "metrics.csv").read_text() == (tmp_path / "reference/metrics.csv").read_text()
    # A script that always passes --resume: a new folder simply runs, a finished one is done
    # (a kill may come after results.json: leftovers go, plots are redrawn).
    assert iqacl(tmp_path / "new", tiny_demo, "naive", "--resume").returncode == 0
    (out / "started.json").write_text("{}")
    again = iqacl(out, tiny_demo, "naive", "--resume", "log.plots=true")
    assert again.returncode == 0 and "finished already; nothing to resume" in again.stderr
    assert not (out / "started.json").exists() and (out / "srcc_matrix.png").is_file()
    assert json.loads((out / "results.json").read_text()) == resumed
    with pytest.raises(UserError, match="holds a finished run of another config"):
        run(load_config(DEMO, overrides(tiny_demo, "ewc")), out, resume=True)


def test_a_checkpoint_half_written_when_killed_is_never_loaded(tiny_demo, tmp_path):
    config = load_config(DEMO, overrides(tiny_demo, "ewc"))
    reference = run(config, tmp_path / "reference")
    out = tmp_path / "killed"
    proc = iqacl(out, tiny_demo, "ewc", kill="checkpoint:2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[-1] == "step_1.pt" and names[0].startswith(".step_2.pt.")  # the half file
    resumed = run(config, out, resume=True)
    assert resumed["matrices"] == reference["matrices"]


def test_resume_refuses_a_checkpoint_of_another_config(tiny_demo, tmp_path):
    from experiments.checkpoint import FORMAT, load_checkpoint

    config = load_config(DEMO, overrides(tiny_demo, "naive"))
    other = load_config(DEMO, overrides(tiny_demo, "ewc"))
    path = tmp_path / "step_1.pt"
    torch.save({"format": FORMAT, "config": {k: v for k, v in other.items() if k != "log"}},
               path)
    with pytest.raises(UserError, match="started with another config"):
        load_checkpoint(path, config)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read the checkpoint"):
        load_checkpoint(path, config)


def _ctrl_c_as_in_a_terminal() -> None:
    # A test run started in the background (`nohup ... &`) ignores SIGINT, and a child would
    # inherit that and never see the Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tiny_demo, tmp_path):
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("iqacl")
    proc = subprocess.run([str(exe), "run", str(DEMO), "--out", str(out),
                           *overrides(tiny_demo, "naive")],
                          env={**os.environ, "IQACL_KILL_AT": "1:2:INT"},
                          capture_output=True, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"iqacl: interrupted; finished experiences are kept in {out}/checkpoints. "
        f"Resume with the same command plus: --out {out} --resume")
    assert "Traceback" not in proc.stderr
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_1.pt"]
    resumed = run(load_config(DEMO, overrides(tiny_demo, "naive")), out, resume=True)
    assert len(resumed["matrices"]["srcc"]) == 2
