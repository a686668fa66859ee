from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from benchmarks.demo.eva_ava import make_demo_data
from benchmarks.errors import UserError

DEMO = Path(__file__).parents[1] / "experiments" / "configs" / "demo.yaml"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small demo pair (real formats): 200 AVA images, 120 of them also in EVA."""
    root = tmp_path_factory.mktemp("demo")
    make_demo_data(root, n_ava=200, n_eva=120, size=96, seed=0)
    return root


def one_line_error(fn, *args, **kwargs) -> str:
    """Call `fn`, expect a UserError, and check it is one line (the CLI prints it so)."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def same_metrics(a, b, atol: float = 0.0) -> bool:
    """Metric values (nested lists, results.json's nulls) compared None-aware: None equals
    None, a number never equals None, numbers within `atol`."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                and len(a) == len(b)
                and all(same_metrics(x, y, atol) for x, y in zip(a, b, strict=True)))
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=0.0, abs_tol=atol) or (math.isnan(a) and math.isnan(b))


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def jpeg(path: Path, size: int = 32, colour=(120, 80, 40)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def png_bomb(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A tiny file whose header claims 200 M pixels: Pillow refuses it as a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    return path


def every_drop(tiny_demo: Path, tmp_path: Path) -> tuple[Path, dict]:
    """The demo pair with drops of every kind: in AVA a missing, an empty and a linked-out
    image and two official test ids that AVA.txt lacks; then, in both datasets, one train,
    one val and one test image made unreadable (the splits are planned first: unreadable
    images are only found when read)."""
    from benchmarks.stream import load_experiences
    from experiments.config import load_config

    root = tmp_path / "data"
    shutil.copytree(tiny_demo, root)
    ava = root / "AVA"
    eva_ids = {p.stem for p in (root / "EVA/images/EVA_together").glob("*.jpg")}
    spare = sorted(p for p in (ava / "images").glob("*.jpg") if p.stem not in eva_ids)
    spare[0].unlink()
    spare[1].write_bytes(b"")
    outside = tmp_path / "elsewhere.jpg"
    shutil.copyfile(spare[2], outside)
    spare[2].unlink()
    spare[2].symlink_to(outside)
    with open(ava / "aesthetics_image_lists/generic_test.jpgl", "a") as fh:
        fh.write("1\n2\n")
    config = load_config(DEMO, [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={ava}"])
    planned = {e.name: e for e in load_experiences(config["stream"], seed=config["seed"],
                                                   test_fraction=0.2, val_fraction=0.1)}
    broken = {}
    for name, folder in (("EVA", root / "EVA/images/EVA_together"), ("AVA", ava / "images")):
        exp = planned[name]
        picks = {part: next(i for i in getattr(exp.split, part) if i not in eva_ids or
                            name == "EVA") for part in ("train", "val", "test")}
        (folder / f"{picks['train']}.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
        (folder / f"{picks['val']}.jpg").write_text("<html>404 not found</html>")
        png_bomb(folder / f"{picks['test']}.jpg")
        broken[name] = picks
    indexing = {"missing": spare[0].stem, "empty": spare[1].stem, "outside_root": spare[2].stem}
    return root, {"planned": planned, "broken": broken, "indexing": indexing}


def read_folder(out: Path) -> dict:
    """What a reviewer re-checks: splits, every predictions file, dropped.csv, counts."""
    files = sorted(p for sub in ("splits", "predictions") for p in (out / sub).rglob("*")
                   if p.is_file())
    results = json.loads((out / "results.json").read_text())
    return {"files": {str(p.relative_to(out)): p.read_text() for p in files},
            "dropped": (out / "dropped.csv").read_text(),
            "counts": results["counts"], "matrices": results["matrices"]}
