"""The crop transform: native-resolution crops, whole-image and five-crop evaluation,
the native image cache, and the six-task protocol end to end on the BIQA stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import same_metrics
from PIL import Image

from benchmarks.demo.biqa import make_biqa_demo
from benchmarks.errors import UserError
from benchmarks.images.cache import ImageCache
from benchmarks.images.crops import ImageList, collate_whole, crop_transforms
from benchmarks.images.decode import adaptive_size, at_least
from models import build_model

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"LIVE": "databaserelease2", "CSIQ": "CSIQ", "BID": "BID",
           "CLIVE": "ChallengeDB_release", "KonIQ": "koniq-10k", "KADID": "kadid10k"}


@pytest.fixture(scope="session")
def biqa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("biqa_crops")
    make_biqa_demo(root, scale=0.3, seed=1)
    return root


def roots(root: Path) -> list[str]:
    return [f"stream.{name}.root={root / folder}" for name, folder in FOLDERS.items()]


def photo(path: Path, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(sum(size))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_adaptive_resize_shrinks_only_when_both_sides_exceed_n():
    assert adaptive_size(1000, 800, 768) == (960, 768)
    assert adaptive_size(800, 1000, 768) == (768, 960)
    assert adaptive_size(1024, 768, 768) == (1024, 768)  # KonIQ: 768 does not exceed 768
    assert adaptive_size(500, 500, 768) == (500, 500)
    assert adaptive_size(1000, 800, 0) == (1000, 800)  # off
    assert at_least(40, 30, 64) == (85, 64)  # upscaled just enough for a 64 px crop
    assert at_least(100, 80, 64) == (100, 80)


def test_crops_keep_native_pixels_and_eval_sees_the_whole_image(tmp_path):
    img = Image.open(photo(tmp_path / "a.png", (120, 90))).convert("RGB")
    tfs = crop_transforms(48)
    torch.manual_seed(0)
    crop = tfs["train"](img)
    assert crop.shape == (3, 48, 48)
    # A crop at native resolution: its pixels are a window of the image (or its mirror).
    full = tfs["eval"](img)
    assert full.shape == (3, 90, 120)  # whole image, not resized
    windows = full.unfold(1, 48, 1).unfold(2, 48, 1)  # (3, 43, 73, 48, 48)
    hits = [(windows - c[:, None, None]).abs().amax(dim=(0, 3, 4)).min()
            for c in (crop, crop.flip(-1))]
    assert min(hits) < 1e-6
    small = Image.open(photo(tmp_path / "s.png", (40, 30))).convert("RGB")
    assert tfs["train"](small).shape == (3, 48, 48)  # upscaled just enough
    five = crop_transforms(48, eval_mode="five_crop")["eval"](img)
    assert five.shape == (5, 3, 48, 48)
    assert torch.allclose(five[0], full[:, :48, :48])  # top-left corner


def test_native_cache_holds_full_resolution_pixels_and_states_its_size(tmp_path):
    files = [str(photo(tmp_path / "a.png", (200, 150))), str(photo(tmp_path / "b.bmp", (90, 120)))]
    cache = ImageCache(tmp_path / "cache", 73)
    assert cache.size_needed(files, native=0) == 3 * (200 * 150 + 90 * 120)
    assert cache.size_needed(files, native=100) == 3 * (133 * 100 + 90 * 120)  # b: 90 < 100
    shard = cache.shard(files, "x", native=0)
    for pos, f in enumerate(files):
        cached = shard.image(pos).permute(1, 2, 0).numpy()
        assert np.array_equal(cached, np.asarray(Image.open(f).convert("RGB")))
    resized = cache.shard(files, "x", native=100)
    assert tuple(resized.image(0).shape) == (3, 100, 133)
    assert resized.folder != shard.folder  # another recipe, another shard


def test_whole_images_of_mixed_sizes_score_as_if_one_by_one():
    # Pretrained: an untrained MobileNet in eval mode scores every image the same.
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", pretrained=True).eval()
    images = [torch.randn(3, 64, 48), torch.randn(3, 48, 64), torch.randn(3, 64, 48)]
    batch = collate_whole([(x, torch.tensor(0.0), i) for i, x in enumerate(images)])[0]
    assert isinstance(batch, ImageList)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(x[None]) for x in images])
    assert torch.allclose(together, alone, atol=1e-5)
    multi = build_model("mobilenet_v2", pretrained=True, heads="per_task").eval()
    with torch.no_grad():
        assert alone.max() - alone.min() > 1e-3  # the images get different scores
        labels = torch.tensor([0, 0, 0])
        assert torch.allclose(multi(batch, labels),
                              torch.cat([multi(x[None], 0) for x in images]), atol=1e-5)
        five = torch.randn(2, 5, 3, 48, 48)
        mean = torch.stack([model(five[i]).mean() for i in range(2)])
        assert torch.allclose(model(five), mean, atol=1e-5)


def test_gpu_decode_with_crops_is_refused_before_reading_data(biqa, tmp_path):

    cfg = ROOT / "experiments" / "configs" / "demo_biqa.yaml"
    with pytest.raises(UserError, match="crop transform"):
        from experiments.config import load_config
        from experiments.run import prepare

        prepare(load_config(cfg, [*roots(biqa), "data.decode=gpu", "train.device=cpu"]))


def test_check_data_on_the_protocol_config(biqa, capsys):
    from experiments.cli import main

    cfg = str(ROOT / "experiments/configs/biqa_cl.yaml")
    assert main(["check-data", cfg, *roots(biqa)]) == 0
    out = capsys.readouterr().out
    assert "references (train/val/test)" in out and "| excluded |" in out
    live = next(line for line in out.splitlines() if line.startswith("| LIVE |"))
    assert "| reference | 7/1/2 |" in live  # 10 references, 70 / 10 / 20
    assert "reference copy (orgs = 1)" in out and "WARNING" not in out
    assert main(["check-data", cfg, *roots(biqa), "stream.LIVE.split_by=image"]) == 0
    assert "WARNING LIVE:" in capsys.readouterr().out


def test_six_task_protocol_end_to_end(biqa, tmp_path, capsys):
    """`make demo-biqa`'s run, small: the 6 x 6 matrix, provenance, exclusions, crops."""
    from experiments.cli import main

    cfg = ROOT / "experiments" / "configs" / "demo_biqa.yaml"
    common = [*roots(biqa), "train.epochs=1", "train.warmup_epochs=0", "data.image_size=32",
              "log.plots=false",
              "log.progress=false", "eval.validation=false"]
    assert main(["run", str(cfg), "--out", str(tmp_path / "plain"), *common]) == 0
    out = capsys.readouterr().out
    assert "after KADID" in out and "MPSR" in out
    r = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert r["experiences"] == list(FOLDERS)
    assert np.array(r["matrices"]["srcc"], dtype=float).shape == (6, 6)
    assert r["labels"]["LIVE"]["direction"] == "lower_better"
    assert r["labels"]["LIVE"]["column"] == "dmos_new"
    assert r["labels"]["KADID"]["direction"] == "higher_better"
    assert r["transforms"]["BID"]["transform"] == "crop"
    assert r["transforms"]["BID"]["eval"].endswith("whole image")
    assert r["excluded"]["CLIVE"] == {"training image (Images/trainingImages)": 7}
    assert r["dropped"] == 0 and not (tmp_path / "plain" / "dropped.csv").exists()
    live = r["counts"]["LIVE"]
    assert live["split_by"] == "reference" and sum(live["references"].values()) >= 10
    test_ids = (tmp_path / "plain" / "splits" / "LIVE" / "test.txt").read_text().split()
    assert all(i.split("/")[0] in {"jp2k", "jpeg", "wn", "gblur", "fastfading"}
               for i in test_ids)
    # The native image cache (read by worker processes) gives the same evaluation (the
    # initial row) as decoding.
    assert main(["run", str(cfg), "--out", str(tmp_path / "cached"), *common,
                 "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.num_workers=2"]) == 0
    c = json.loads((tmp_path / "cached" / "results.json").read_text())
    assert r["constant_predictions"] == c["constant_predictions"] == []
    assert all(isinstance(v, float) for v in r["initial"]["srcc"])
    assert same_metrics(r["initial"]["srcc"], c["initial"]["srcc"], atol=1e-6)
    # Each dataset's own column after its experience: a number on both paths.
    for run in (r, c):
        diagonal = [run["matrices"]["srcc"][i][i] for i in range(6)]
        assert all(isinstance(v, float) and -1 <= v <= 1 for v in diagonal), diagonal
