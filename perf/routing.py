"""Task-agnostic scoring's costs: routing features in a run, K-means at KonIQ scale,
TSN's one pass per seen task at test."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .timing import ROOT, Row, side_by_side, timed

BIQA = ROOT / "experiments" / "configs" / "demo_biqa.yaml"
NAMES = ("LIVE", "CSIQ", "BID", "CLIVE", "KonIQ", "KADID")


def routing_run_rows(work: Path, scale: float, size: int, epochs: int = 3) -> list[Row]:
    """Two six-dataset `eval.heads=weighted` runs: the default routing network (a frozen
    copy of the initial MobileNetV2, the test images as they are) and a smaller one
    (MobileNetV3-Small seeing half the resolution), each its routing seconds against the
    rest of its evaluation."""
    from benchmarks.demo.biqa import FOLDERS, make_biqa_demo

    root = work / "biqa"
    make_biqa_demo(root, scale=scale, seed=0)
    args = [*(f"stream.{n}.root={root / f}" for n, f in zip(NAMES, FOLDERS, strict=True)),
            f"data.image_size={size}", "log.progress=false", "log.plots=false",
            "log.csv=false", "model.heads=per_task", "eval.heads=weighted",
            "model.pretrained=false",  # timing only; MobileNetV3-Small has no local weights
            f"train.epochs={epochs}", f"train.warmup_epochs={min(1, epochs - 1)}"]
    small = ["eval.routing.network=mobilenet_v3_small",
             f"eval.routing.image_size={max(16, size // 2)}"]
    return [routing_run_row(work / "default", args, "the initial MobileNetV2",
                            "test images as given"),
            routing_run_row(work / "small", args + small,
                            f"MobileNetV3-Small at {max(16, size // 2)} px",
                            "eval.routing.network and image_size")]


def routing_run_row(work: Path, args: list[str], router: str, how: str) -> Row:
    """One weighted run: routing feature seconds against the rest of its evaluation."""
    from experiments.config import load_config
    from experiments.run import Trainer, run

    config = load_config(BIQA, args)
    spent = {"eval": 0.0}
    evaluate = Trainer.evaluate

    def timed_evaluate(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            spent["eval"] += time.perf_counter() - started

    routers = []
    from strategies.routing import HeadRouting

    original = HeadRouting.see_initial_model

    def keep(self, model):
        routers.append(self)
        return original(self, model)

    Trainer.evaluate, HeadRouting.see_initial_model = timed_evaluate, keep
    try:
        results = run(config, work / "routed")
    finally:
        Trainer.evaluate, HeadRouting.see_initial_model = evaluate, original
    seconds = routers[-1].seconds
    # Test-image features are inside the evaluations; training images' after each experience.
    rest = spent["eval"] - (seconds["features"] - seconds["training"])
    counts = results["counts"]
    n_train = sum(c["train"] for c in counts.values())
    n_eval = sum(c["test"] + c["val"] for c in counts.values())
    note = (f"demo_biqa.yaml, {router} ({how}), on the stand-ins ({n_train} training, "
            f"{n_eval} test + val images), CPU: routing features {seconds['features']:.1f} s "
            f"(each test image once, cached; each training image once, for its task's "
            f"prototypes: {n_train} of the {n_train + n_eval} images a frozen-network pass "
            f"sees), the run's other evaluation {rest:.1f} s, K-means {seconds['kmeans']:.1f} s "
            f"(not counted). The training images' pass is the method's: the field fits each "
            f"task's prototypes on all its training images")
    return Row(f"routing features over a weighted run vs its evaluation, {router} (time ratio)",
               seconds["features"], rest, "s/run", 0.10, higher_is_better=False, note=note,
               samples=[seconds["features"] / rest])


# The six datasets' labelled images (docs/BIQA.md) and this suite's passes over them in a
# six-stage run: each stage and the initial row evaluate every test + val split (0.3 of
# each dataset), and best_val validates the current dataset (0.1) after each of 9 epochs.
PROTOCOL_IMAGES = 779 + 866 + 586 + 1162 + 10073 + 10125
EVAL_PASSES = 7 * 0.3 + 9 * 0.1  # per labelled image; routing: 1 (every image once)


def routing_scale_rows(test_size: tuple[int, int] = (384, 512), routing_size: int = 64,
                       batch: int = 4, rounds: int = 3) -> list[Row]:
    """Routing at the protocol's scale: a ResNet-18 scoring whole test images against a
    MobileNetV3-Small routing network at `routing_size`, per image, on this machine, times
    the run's passes (routing sees every image once, evaluation EVAL_PASSES times)."""
    from models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18").eval()  # one head: the backbone pass is the cost
    router = build_model("mobilenet_v3_small").eval()
    x = torch.randint(0, 256, (batch, 3, *test_size), dtype=torch.uint8)
    small = torch.rand(batch, 3, routing_size, routing_size)

    def score() -> None:
        with torch.no_grad():
            model(x)

    def route() -> None:
        with torch.no_grad():
            router.backbone(router.as_input(small))

    score(), route()  # warm-up
    e = min(timed(score) for _ in range(rounds)) / batch
    r = min(timed(route) for _ in range(rounds)) / batch
    routing, evaluation = PROTOCOL_IMAGES * r, PROTOCOL_IMAGES * EVAL_PASSES * e
    note = (f"per image on this CPU: ResNet-18 on a whole {test_size[0]}x{test_size[1]} test "
            f"image {e * 1000:.0f} ms, MobileNetV3-Small routing at {routing_size} px "
            f"{r * 1000:.1f} ms; x {PROTOCOL_IMAGES} images once (routing) against "
            f"{EVAL_PASSES:.1f} evaluation passes per image (estimated, not run). With the "
            f"default routing network (the model's own copy, same input) the ratio is "
            f"1 / {EVAL_PASSES:.1f} = {1 / EVAL_PASSES:.2f} by construction")
    return [Row("routing at the protocol's scale, MobileNetV3-Small at 64 px vs evaluation "
                "(time ratio, estimated)", routing, evaluation, "s/run", 0.10,
                higher_is_better=False, note=note, samples=[routing / evaluation])]


def kmeans_rows(n: int = 7000, dim: int = 128, k: int = 128, n_init: int = 20,
                train_size: int = 384, steps: int = 2) -> list[Row]:
    """K-means for one experience at KonIQ scale (the field's n_init) against that
    experience's training time, extrapolated from timed ResNet-18 steps on this machine."""
    from models import build_model
    from models.loss import FidelityLoss
    from models.routing import fit_prototypes

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(40, dim, generator=gen)
    feats = centres[torch.randint(0, 40, (n,), generator=gen)] + \
        0.3 * torch.randn(n, dim, generator=gen)
    feats = torch.nn.functional.normalize(feats, dim=1)
    kmeans = timed(lambda: fit_prototypes(feats, k, n_init, 1000, 0))

    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    loss = FidelityLoss("binary")
    batch = 32
    x = torch.randint(0, 256, (batch, 3, train_size, train_size), dtype=torch.uint8)
    y, tasks = torch.rand(batch), torch.zeros(batch, dtype=torch.long)

    def step() -> None:
        opt.zero_grad()
        loss(model(x), y, tasks, None).backward()
        opt.step()

    step()  # warm-up
    per_step = min(timed(step) for _ in range(steps))
    epochs = 9  # the field's: 3 heads-only + 6 whole-network (counted as whole: an upper bound)
    training = per_step * (n / batch) * epochs
    note = (f"{n} x {dim} synthetic features, k = {k}, n_init = {n_init}, max_iter 1000: "
            f"{kmeans:.1f} s; training: a ResNet-18 step at {train_size} px, batch {batch}, "
            f"{per_step:.2f} s on this CPU, x {n // batch} steps x {epochs} epochs = "
            f"{training / 3600:.1f} h (extrapolated, not run)")
    return [Row("K-means for one KonIQ-sized experience vs its training (time ratio)",
                kmeans, training, "s", 0.05, higher_is_better=False, note=note,
                samples=[kmeans / training])]


def tsn_rows(size: int, tasks: int = 6, batch: int = 32, rounds: int = 5) -> list[Row]:
    """TSN at test: `weighted` runs one pass per seen task (each with its BatchNorm set),
    `oracle` one pass, same batch."""
    from models import build_model
    from strategies.tsn import TSNModel

    torch.manual_seed(0)
    model = TSNModel.wrap(build_model("mobilenet_v2", pretrained=False, heads="per_task"))
    for t in range(tasks):
        model.heads[str(t)] = model.heads["0"]
        model.finish(t)
    model.eval()
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    seen = list(range(tasks))

    def oracle() -> None:
        with torch.no_grad():
            model.forward_single_task(x, tasks - 1)

    def weighted() -> None:
        with torch.no_grad():
            model.head_scores(x, seen)

    turns = side_by_side(oracle, weighted, rounds)
    fast, slow = turns.rates(1)
    ratio = float(np.median(turns.ratios))
    note = (f"mobilenet_v2 at {size} px, batch {batch}, {tasks} seen tasks, CPU, {rounds} "
            f"rounds in turns: weighted scoring costs {ratio:.1f}x the oracle's (routing "
            f"features aside), one backbone pass per task")
    return [Row("TSN evaluation: one pass per seen task vs oracle (time ratio)", 1 / slow,
                1 / fast, "s/batch", None, higher_is_better=False, note=note,
                samples=turns.ratios)]
