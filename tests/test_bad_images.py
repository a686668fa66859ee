"""Real-world images: converted when readable, dropped with a reason when not, never fatal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import every_drop, png_bomb, read_folder
from PIL import Image

from benchmarks.errors import UserError
from benchmarks.images.decode import load_rgb
from experiments.config import load_config
from experiments.run import run

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def test_readable_oddities_are_converted(tmp_path):
    Image.new("CMYK", (10, 6), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (10, 6), 128).save(tmp_path / "grey.jpg")
    Image.new("RGBA", (10, 6), (255, 0, 0, 128)).save(tmp_path / "rgba.jpg", format="PNG")
    rotated = Image.new("RGB", (10, 6), (0, 0, 255))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° when shown
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    for name in ("cmyk", "grey", "rgba"):
        img = load_rgb(str(tmp_path / f"{name}.jpg"))
        assert img.mode == "RGB" and img.size == (10, 6)
    assert load_rgb(str(tmp_path / "exif.jpg")).size == (6, 10)


@pytest.mark.parametrize("kind", ["truncated", "not_an_image", "bomb"])
def test_unreadable_images_raise_so_the_dataset_can_skip_them(kind, tmp_path, tiny_demo):
    path = tmp_path / "x.jpg"
    good = next((tiny_demo / "AVA/images").glob("*.jpg")).read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "not_an_image":
        path.write_text("<html>404 not found</html>")
    else:
        png_bomb(path)
    with pytest.raises(Exception):  # noqa: B017 (each kind raises its own error)
        load_rgb(str(path))


def broken_demo(tiny_demo: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the demo pair with three AVA-only images broken in three ways."""
    root = tmp_path / "data"
    shutil.copytree(tiny_demo, root)
    eva_ids = {p.stem for p in (root / "EVA/images/EVA_together").glob("*.jpg")}
    victims = sorted(p for p in (root / "AVA/images").glob("*.jpg") if p.stem not in eva_ids)[:3]
    victims[0].write_bytes(victims[0].read_bytes()[:300])
    victims[1].write_text("not an image")
    png_bomb(victims[2])
    return root, [p.stem for p in victims]


def overrides(root: Path, *extra: str) -> list[str]:
    return [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=48", "train.epochs=1",
            "log.progress=false", "log.plots=false", *extra]


def test_unreadable_images_are_skipped_recorded_and_never_kill_the_run(tiny_demo, tmp_path):
    root, bad = broken_demo(tiny_demo, tmp_path)
    out = tmp_path / "run"
    results = run(load_config(DEMO, overrides(root, "data.max_dropped_fraction=0.05")), out)
    dropped = pd.read_csv(out / "dropped.csv", dtype={"image_id": str})
    assert sorted(dropped["image_id"]) == sorted(bad)
    assert dropped["reason"].str.startswith("unreadable: ").all()
    assert "DecompressionBombError" in " ".join(dropped["reason"])
    assert results["unreadable"] == 3 and results["counts"]["AVA"]["unreadable"] == 3
    for stage in ("initial", "after_0", "after_1"):  # scored images only, none of the bad
        ids = set(pd.read_csv(out / "predictions" / stage / "AVA.csv",
                              dtype={"image_id": str})["image_id"])
        assert not ids & set(bad)
    assert all(v is not None for row in results["matrices"]["srcc"] for v in row)
    json.dumps(results)


def test_too_many_unusable_images_stop_the_run_with_a_clear_error(tiny_demo, tmp_path):
    root, _ = broken_demo(tiny_demo, tmp_path)
    with pytest.raises(UserError, match=r"experience 'AVA' .* unusable .* more than "
                                        r"data.max_dropped_fraction = 1.0%"):
        run(load_config(DEMO, overrides(root)), tmp_path / "run")


def test_too_many_missing_images_stop_before_training(tiny_demo, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_demo, root)
    for p in sorted((root / "AVA/images").glob("*.jpg"))[:5]:
        p.unlink()
    with pytest.raises(UserError, match=r"'AVA' .* 5 images \(2.5%\) are unusable "
                                        r"\{'missing': 5\}"):
        run(load_config(DEMO, overrides(root)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_check_data_reports_before_a_run(tiny_demo, tmp_path, capsys):
    from experiments.cli import main

    root, bad = broken_demo(tiny_demo, tmp_path)
    (root / "AVA/images" / f"{bad[0]}.jpg").unlink()  # one missing as well
    args = ["check-data", str(DEMO), *overrides(root)]
    assert main(args) == 0  # without --decode only existence is checked: 1 of 200 missing
    out = capsys.readouterr().out
    assert "| experience | labelled | usable | missing | empty | outside root | unreadable |" \
        in out
    assert "| AVA | 200 | 199 | 1 | 0 | 0 | not checked (--decode) |" in out
    assert f"  AVA {bad[0]}: missing: no image file with this id under the dataset root" in out
    assert main([*args, "--decode"]) == 2  # 1 missing + 2 unreadable = 1.5% > 1%
    out = capsys.readouterr().out
    assert "| AVA | 200 | 197 | 1 | 0 | 0 | 2 |" in out and "NO: 1.5% unusable > 1.0%" in out
    assert "DecompressionBombError" in out


def test_check_data_counts_each_reason_and_names_each_image(tiny_demo, tmp_path, capsys):
    from experiments.cli import main

    root, info = every_drop(tiny_demo, tmp_path)
    assert main(["check-data", str(DEMO), *overrides(root, *AGREE), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "| AVA | 200 | 194 | 1 | 1 | 1 | 3 |" in out
    assert "| EVA | 120 | 117 | 0 | 0 | 0 | 3 |" in out
    link = info["indexing"]["outside_root"]
    assert f"  AVA {link}: images/{link}.jpg is a link pointing outside the dataset root" in out
    assert f"  AVA {info['indexing']['empty']}: empty file (0 bytes)" in out
    for name, picks in info["broken"].items():
        for image_id in picks.values():
            assert f"  {name} {image_id}: unreadable: " in out
    assert "  AVA: 2 id(s) of the official test list are not in the label file and are not " \
        "used (1, 2)" in out

def check_agreement(out: Path, info: dict) -> None:
    results = json.loads((out / "results.json").read_text())
    dropped = pd.read_csv(out / "dropped.csv", dtype=str, keep_default_na=False)
    stages = ["initial", "after_0", "after_1"]
    found_at = {("EVA", "train"): "after_0", ("EVA", "val"): "after_0",
                ("EVA", "test"): "initial", ("AVA", "train"): "after_1",
                ("AVA", "val"): "after_0", ("AVA", "test"): "initial"}
    for name, picks in info["broken"].items():
        counts = results["counts"][name]
        for part in ("train", "val", "test"):
            listed = (out / "splits" / name / f"{part}.txt").read_text().split()
            planned = getattr(info["planned"][name].split, part)
            assert listed == [i for i in planned if i != picks[part]], (name, part)
            assert counts[part] == len(listed)
            row = dropped[dropped["image_id"].eq(picks[part]) & dropped["experience"].eq(name)]
            assert row[["kind", "part", "stage"]].values.tolist() == [
                ["unreadable", part, found_at[name, part]]]
        test_ids = (out / "splits" / name / "test.txt").read_text().split()
        for stage in stages:  # every prediction file scores exactly the listed test images
            preds = pd.read_csv(out / "predictions" / stage / f"{name}.csv", dtype=str)
            assert preds["image_id"].tolist() == test_ids
        assert counts["unreadable"] == 3
        assert counts["usable"] == counts["train"] + counts["val"] + counts["test"] + \
            counts["removed_for_leakage"]
        assert counts["labelled"] == counts["usable"] + counts["dropped"]
        assert counts["dropped"] == len(dropped[dropped["experience"] == name])
    assert results["counts"]["AVA"]["dropped_by_reason"] == {
        "missing": 1, "empty": 1, "outside_root": 1, "unreadable": 3}
    assert results["dropped_by_reason"] == {"missing": 1, "empty": 1, "outside_root": 1,
                                            "unreadable": 6}
    for kind, image_id in info["indexing"].items():
        row = dropped[dropped["image_id"] == image_id]
        assert row[["experience", "kind", "part", "stage"]].values.tolist() == [
            ["AVA", kind, "", "indexing"]]
    assert "is a link pointing outside the dataset root" in \
        dropped.loc[dropped["kind"] == "outside_root", "reason"].iloc[0]
    assert results["counts"]["AVA"]["official_test_unlabelled"] == 2
    assert results["official_test_unlabelled"] == {"AVA": ["1", "2"]}


AGREE = ("data.max_dropped_fraction=0.05", "train.epochs=2")


def test_splits_predictions_counts_and_dropped_agree(tiny_demo, tmp_path):
    root, info = every_drop(tiny_demo, tmp_path)
    run(load_config(DEMO, overrides(root, *AGREE)), tmp_path / "run")
    check_agreement(tmp_path / "run", info)


def test_a_resumed_run_drops_and_counts_as_the_uninterrupted_one(tiny_demo, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import torch

    root, info = every_drop(tiny_demo, tmp_path)
    config = load_config(DEMO, overrides(root, *AGREE))
    run(config, tmp_path / "whole")
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("iqacl")
    proc = subprocess.run([str(exe), "run", str(DEMO), "--out", str(out),
                           *overrides(root, *AGREE)],
                          env={**os.environ, "IQACL_KILL_AT": "1:2"}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    saved = torch.load(out / "checkpoints" / "step_1.pt", weights_only=True)["unreadable"]
    assert sorted(saved[0]["image_id"]) == sorted(info["broken"]["EVA"].values())
    run(config, out, resume=True)
    check_agreement(out, info)
    assert read_folder(out) == read_folder(tmp_path / "whole")
