"""The training recipe's costs: the fidelity loss's step, per-epoch validation (best_val)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .timing import Row, photo_config, side_by_side, timed


def loss_rows(size: int, batch: int = 128, rounds: int = 7, steps: int = 3) -> list[Row]:
    """A training step (forward, loss, backward, Adam) with the fidelity loss vs with
    MSE + ranking, same model and batch; the loss alone is in the note."""
    from models import build_model
    from models.loss import FidelityLoss, IQALoss

    torch.manual_seed(0)
    model = build_model("mobilenet_v2", pretrained=False)
    models = {"mse": model, "fidelity": copy.deepcopy(model)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    losses = {"mse": IQALoss(0.1, 0.1), "fidelity": FidelityLoss("binary")}
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    y = torch.rand(batch) * 2 - 1
    tasks = torch.zeros(batch, dtype=torch.long)

    def step(kind: str):
        def go() -> None:
            for _ in range(steps):
                opts[kind].zero_grad()
                out = models[kind](x)
                loss = losses[kind](out, y) if kind == "mse" else \
                    losses[kind](out, y, tasks, None)
                loss.backward()
                opts[kind].step()
        return go

    turns = side_by_side(step("mse"), step("fidelity"), rounds)
    pred = torch.randn(batch, requires_grad=True)

    def alone(kind: str) -> float:
        fn = (lambda: losses[kind](pred, y)) if kind == "mse" else \
            (lambda: losses[kind](pred, y, tasks, None))
        return min(timed(lambda: [fn().backward() for _ in range(100)]) for _ in range(3)) / 100

    note = (f"mobilenet_v2 at {size} px, batch {batch} ({batch * (batch - 1) // 2} pairs), CPU, "
            f"{steps} steps a round, {rounds} rounds in turns; the loss alone (forward + "
            f"backward): fidelity {alone('fidelity') * 1e3:.2f} ms, MSE + ranking "
            f"{alone('mse') * 1e3:.2f} ms")
    fast, slow = turns.rates(steps)
    return [Row("training step: fidelity loss vs MSE + ranking (time ratio)", 1 / slow,
                1 / fast, "s/step", 1.05, higher_is_better=False, note=note,
                samples=turns.ratios)]


def selection_rows(root: Path, cache_dir: Path, size: int, epochs: int = 2,
                   rounds: int = 3) -> list[Row]:
    """One experience's training with `train.select=best_val` (validation after every
    epoch) vs `last`, from the image cache."""
    from experiments.run import prepare

    benches = {}
    for select in ("best_val", "last"):
        bench = prepare(photo_config(root, cache_dir, f"data.image_size={size}",
                                     f"train.epochs={epochs}", f"train.select={select}",
                                     # scores that vary: selection copies weights
                                     "model.pretrained=true"))
        bm = bench.stream.benchmark
        if bench.trainer.selection is not None:
            trainer = bench.trainer
            trainer.selection.evaluate = lambda exps, t=trainer, name=bm.valid_stream.name: \
                t.evaluate(exps, name)
            trainer.selection.targets = [bm.valid_stream[1]]
        benches[select] = bench

    def train(select: str):
        bench = benches[select]
        return lambda: bench.trainer.train(bench.stream.benchmark.train_stream[1])

    turns = side_by_side(train("last"), train("best_val"), rounds)
    exp = benches["last"].stream.experiences[1]
    n_train, n_val = len(exp.split.train), len(exp.split.val)
    extra = [r - 1 for r in turns.ratios]
    note = (f"AVA-sized photos, {n_train} training and {n_val} validation images, {epochs} "
            f"epochs at {size} px, image cache, CPU, {rounds} rounds in turns: per-epoch "
            f"validation adds {100 * sorted(extra)[len(extra) // 2]:.1f}% to training")
    fast, slow = turns.rates(1)
    return [Row("per-epoch validation (best_val) vs none: training time ratio", 1 / slow,
                1 / fast, "s/experience", None, higher_is_better=False, note=note,
                samples=turns.ratios)]
