"""The decoded-image cache: same eval tensors as the uncached path, keyed, shared safely."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.demo.eva_ava import make_demo_data
from benchmarks.images.cache import ImageCache, decode_resized, eval_resize
from benchmarks.images.decode import load_rgb
from benchmarks.stream import build_stream, image_transforms
from models.iqa import normalise, normalise_uint8

IMAGE_SIZE = 64  # short side 73: AVA-sized JPEGs (375 px) are decoded at 1/4 scale


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_demo_data(root, n_ava=40, n_eva=20, size=(500, 375), seed=1)
    return root


def entries(root: Path) -> list[dict]:
    return [{"name": "EVA", "format": "eva", "root": str(root / "EVA")},
            {"name": "AVA", "format": "ava", "root": str(root / "AVA")}]


def stream(root: Path, cache: ImageCache | None):
    return build_stream(entries(root), image_size=IMAGE_SIZE, cache=cache)


def test_reduced_size_decoding_is_used_and_never_goes_below_the_short_side(photos):
    f = next((photos / "AVA" / "images").glob("*.jpg"))
    full, reduced = load_rgb(str(f)), load_rgb(str(f), short_side=73)
    assert full.size == (500, 375)
    assert reduced.size == (125, 94)  # 1/4 scale; 1/8 would be under 73
    assert load_rgb(str(f), short_side=200).size == (500, 375)  # not half or less: full


def test_cached_eval_tensors_equal_the_uncached_path_exactly(photos, tmp_path):
    plain = stream(photos, None)
    cache = ImageCache(tmp_path / "cache", eval_resize(IMAGE_SIZE))
    cached = stream(photos, cache)
    for part in ("train_stream", "test_stream"):
        for a, b in zip(getattr(plain.benchmark, part), getattr(cached.benchmark, part),
                        strict=True):
            da, db = a.dataset.eval(), b.dataset.eval()
            assert len(da) == len(db) > 0
            for i in range(len(da)):
                xa, ya, ra, ta = da[i]
                xb, yb, rb, tb = db[i]
                assert xb.dtype == torch.uint8  # normalised by the model, on its device
                assert torch.equal(xa, xb.float().div(255))  # what ToTensor gives
                assert torch.equal(normalise(xa), normalise_uint8(xb))
                assert (ya, ra, ta) == (yb, rb, tb)
    # Training crops come from the cached image: right size, normalised.
    x = cached.benchmark.train_stream[0].dataset.train()[0][0]
    assert x.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.uint8



def test_cached_training_crop_is_a_resized_crop_flipped_half_the_time():
    # One fused transform: the crop torchvision's RandomResizedCrop would draw, resized
    # with antialiasing, flipped with probability 1/2 (flip and resize commute).
    torch.manual_seed(0)
    img = torch.randint(0, 256, (73, 97, 3), dtype=torch.uint8).permute(2, 0, 1)
    tf = image_transforms(IMAGE_SIZE, (0.5, 1.0), cached=True)["train"]
    flips = 0
    for _ in range(200):
        state = torch.get_rng_state()
        out = tf(img)
        torch.set_rng_state(state)
        u = torch.rand(5).tolist()
        i, j, h, w = tf.sample(73, 97, u[:4])
        assert 0.45 * 73 * 97 <= h * w <= 73 * 97 and i + h <= 73 and j + w <= 97
        ref = torch.nn.functional.interpolate(img[None, :, i:i + h, j:j + w].float(),
                                              size=(IMAGE_SIZE, IMAGE_SIZE),
                                              mode="bilinear", antialias=True)[0]
        if u[4] < 0.5:
            ref, flips = ref.flip(-1), flips + 1
        assert out.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and out.dtype == torch.uint8
        assert out.permute(1, 2, 0).is_contiguous()  # channels-last: collate copies plainly
        assert (out.float() - ref).abs().max() <= 1.5  # uint8 rounding only
    assert 70 < flips < 130

def test_a_shard_is_reused_and_rebuilt_when_a_file_or_the_size_changes(photos, tmp_path):
    files = sorted(str(f) for f in (photos / "AVA" / "images").glob("*.jpg"))[:5]
    cache = ImageCache(tmp_path, 73)
    first = cache.shard(files, "AVA")
    assert cache.shard(files, "AVA").folder == first.folder  # reused, not rebuilt
    assert np.array_equal(first.image(2).permute(1, 2, 0).numpy(), decode_resized(files[2], 73))
    assert ImageCache(tmp_path, 80).shard(files, "AVA").folder != first.folder
    copy = tmp_path / "copy"
    copy.mkdir()
    moved = [str(copy / Path(f).name) for f in files]
    for src, dst in zip(files, moved, strict=True):
        Path(dst).write_bytes(Path(src).read_bytes())
    before = cache.shard(moved, "AVA").folder
    Image.new("RGB", (400, 300), (10, 200, 30)).save(moved[0])  # the file changes
    after = cache.shard(moved, "AVA")
    assert after.folder != before
    assert tuple(after.image(0).shape) == (3, 73, 97)


def test_an_unreadable_image_comes_out_blank_with_a_nan_target(photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = next((photos / "AVA" / "images").glob("*.jpg"))
    shard = ImageCache(tmp_path / "c", 73).shard([str(good), str(bad)])
    assert shard.image(1) is None and shard.image(0) is not None


def _fill(folder: str, files: list[str], out) -> None:
    out.put(str(ImageCache(folder, 73).shard(files, "AVA").folder))


def test_two_processes_filling_one_shard_at_once_agree(photos, tmp_path):
    files = sorted(str(f) for f in (photos / "AVA" / "images").glob("*.jpg"))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), files, out)) for _ in range(2)]
    for p in procs:
        p.start()
    folders = {out.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(folders) == 1
    shards = [d for d in os.listdir(tmp_path) if not d.endswith(".lock")]
    assert shards == [Path(folders.pop()).name]  # one shard, no temporary folder left
    shard = ImageCache(tmp_path, 73).shard(files)
    assert np.array_equal(shard.image(7).permute(1, 2, 0).numpy(), decode_resized(files[7], 73))


def _run(root: Path, out: Path, *extra: str) -> dict:
    from experiments.run import run
    from models.backbones import weight_file

    if not weight_file("mobilenet_v2").is_file():
        pytest.skip("needs mobilenet_v2 weights: `make weights`")
    return run(_config(root, *extra), out)


def _config(root: Path, *extra: str) -> dict:
    from experiments.config import load_config

    demo = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"
    return load_config(demo, [f"stream.EVA.root={root / 'EVA'}",
                              f"stream.AVA.root={root / 'AVA'}",
                              f"data.image_size={IMAGE_SIZE}", "train.epochs=2",
                              "log.progress=false", "log.plots=false", *extra])


def test_frozen_backbone_matrices_are_the_same_with_and_without_cached_features(photos,
                                                                               tmp_path):
    common = ["model.freeze_backbone=true", "strategy.name=ewc", "train.lr=0.003"]
    slow = _run(photos, tmp_path / "plain", *common, "model.cache_features=false")
    fast = _run(photos, tmp_path / "cached", *common, "model.cache_features=true",
                "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}")
    for m in ("srcc", "plcc"):
        assert np.allclose(slow["matrices"][m], fast["matrices"][m], atol=1e-5, rtol=0)
        assert np.allclose(slow["initial"][m], fast["initial"][m], atol=1e-5, rtol=0)
    # Training did change the head (and only the head): the matrix is not the initial row.
    assert not np.allclose(slow["matrices"]["srcc"][1], slow["initial"]["srcc"], atol=1e-3)
    frozen = torch.load(tmp_path / "cached" / "models" / "after_1.pt")
    first = torch.load(tmp_path / "cached" / "models" / "after_0.pt")
    assert all(torch.equal(first[k], v) for k, v in frozen.items() if k.startswith("backbone"))


def test_a_run_from_the_image_cache_with_worker_processes(photos, tmp_path):
    results = _run(photos, tmp_path / "r", "data.cache=true", "data.num_workers=2",
                   f"data.cache_dir={tmp_path / 'cache'}")
    assert results["counts"]["AVA"]["dropped"] == 0
    assert np.isfinite(results["matrices"]["srcc"]).all()
    assert len(list((tmp_path / "cache").glob("*/index.npy"))) == 2  # one shard per dataset


def test_evaluation_uses_one_pool_of_workers_for_every_evaluated_dataset(photos, tmp_path):
    from experiments.run import prepare, train_and_evaluate

    bench = prepare(_config(photos, "data.cache=true", "data.num_workers=1",
                            f"data.cache_dir={tmp_path / 'cache'}",
                            "eval.validation=true"))
    train_and_evaluate(bench)  # test and validation streams, before and after each step
    strategy, benchmark = bench.trainer.strategy, bench.stream.benchmark
    (pool,) = strategy.eval_pools.values()
    assert len(pool.sources) == 4  # 2 experiences x (test, validation)

    def workers() -> list[int]:
        return [w.pid for w in pool.loader.loader._iterator._workers]

    started = workers()
    kept = bench.trainer.evaluate(benchmark.test_stream)
    bench.trainer.evaluate(benchmark.valid_stream)
    assert workers() == started  # no worker was started again
    bench.trainer.num_workers = 0  # Avalanche's own loaders, in this process
    fresh = bench.trainer.evaluate(benchmark.test_stream)
    assert kept.keys() == fresh.keys()
    for k in kept:
        for a, b in zip(kept[k], fresh[k], strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), (a, b)
