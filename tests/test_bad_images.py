"""Real-world images: converted when readable, dropped with a reason when not, never fatal."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmarks.errors import UserError
from benchmarks.images import load_rgb
from experiments.config import load_config
from experiments.run import run

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


def png_bomb(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A tiny file whose header claims 200 M pixels: Pillow refuses it as a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    return path


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
            "data.image_size=48", "train.epochs=1", "model.pretrained=false",
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
    assert "| AVA | 200 | 199 | 1 | not checked (--decode) |" in out
    assert main([*args, "--decode"]) == 2  # 1 missing + 2 unreadable = 1.5% > 1%
    out = capsys.readouterr().out
    assert "| AVA | 200 | 197 | 1 | 2 |" in out and "NO: 1.5% unusable > 1.0%" in out
    assert "DecompressionBombError" in out
